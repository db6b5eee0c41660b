"""The served model and its hot swap.

A `ModelHolder` holds one `LoadedModel` reference. A background thread polls the registry's
champion alias; when it names another artifact, the new bundle is fetched (every checksum
verified), loaded, given its request schema and scored once, and only then is the reference
replaced, in one assignment. A request reads the reference once, at its start, and uses that
model for validation, scoring and the version it reports, so no request ever mixes two models
and none fails during a swap.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from keel.history import HistoryIndex, settings_from_spec
from keel.matrix import matrix_from_columns
from keel.model import ModelBundle, load_bundle
from keel.registry import repository as repo
from keel.registry.models import ModelVersion
from keel.registry.store import ArtifactStore
from keel.scoring import score_matrix
from keel.serving.schema import RecordSchema, build_record_schema

__all__ = ["LoadedModel", "ModelHolder", "ScoringOptions", "model_card"]

log = logging.getLogger(__name__)

_RETRY_FAILED_SECONDS = 60.0


@dataclass(frozen=True)
class ScoringOptions:
    """How the API scores: the same settings as the batch `score` flow.

    Attributes:
        model_name: The registered model (`gate.model_name`).
        threshold: Decision threshold (`evaluate.threshold`).
        reason_codes: Reasons per record (`score.reason_codes`).
        reason_method: `shap` or `approx` (`score.reason_method`).
        entity_key: The entity-key column (`data.entity_key.name`): an optional request field.
        max_records: Records per request (`api.max_records`).
        target: The label column (`data.target`), for outcome-history features.
        history_pool: Loads the records whose known outcomes feed a model's outcome-history
            features (the configured source); called when such a model is loaded.
    """

    model_name: str
    threshold: float
    reason_codes: int = 3
    reason_method: str = "shap"
    entity_key: str | None = None
    max_records: int = 1000
    target: str | None = None
    history_pool: Callable[[], pd.DataFrame] | None = None


@dataclass(frozen=True)
class LoadedModel:
    """One verified, loaded model version: everything a request needs."""

    name: str
    version: int
    sha256: str
    bundle: ModelBundle
    schema: RecordSchema
    card: dict[str, Any]
    loaded_at: dt.datetime
    history: HistoryIndex | None = None

    def matrix(self, records: list[dict[str, Any]], as_of: dt.datetime | None) -> np.ndarray:
        """Validated records as the model matrix, outcome-history features included (as of
        `as_of`, default now): the matrix batch scoring builds from the same records (`frame`,
        then `HistoryIndex.apply` and `build_matrix`), without pandas."""
        columns = self.schema.columns(records)
        if self.history is not None:
            added = self.history.lookup(columns, len(records), as_of or dt.datetime.now(dt.UTC))
            columns.update((name, (values, values.dtype)) for name, values in added.items())
        return matrix_from_columns(columns, len(records), self.bundle.spec)


def model_card(row: ModelVersion) -> dict[str, Any]:
    """A version's card: identity, training window, metrics and lineage, as JSON values."""
    return {
        "model": row.model_name,
        "version": row.version,
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
        "artifact": {"uri": row.artifact_uri, "sha256": row.artifact_sha256},
        "training_window": row.training_window,
        "metrics": row.metrics,
        "lineage": {
            "flow_run_id": row.flow_run_id,
            "fingerprints": row.fingerprints,
            "code_version": row.code_version,
            "libraries": row.libraries,
            "device": row.device,
            "params": row.params,
        },
        "gate": {"outcome": row.gate_outcome, "decision": row.gate_decision},
    }


class ModelHolder:
    """Holds the served champion and swaps it when the registry's alias moves."""

    def __init__(
        self,
        engine: Engine,
        store: ArtifactStore,
        options: ScoringOptions,
        *,
        on_swap: Callable[[LoadedModel], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """Create an empty holder (call `refresh` or `start` to load the champion).

        Args:
            engine: The registry database.
            store: The artifact store.
            options: Scoring settings (model name, threshold, reasons, request limits).
            on_swap: Called after a new model is in place.
            on_error: Called with a short reason when a champion cannot be loaded.
        """
        self._engine = engine
        self._store = store
        self._options = options
        self._on_swap = on_swap
        self._on_error = on_error
        self._current: LoadedModel | None = None
        self._failed: dict[str, float] = {}
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> LoadedModel | None:
        """The served model (read it once per request)."""
        return self._current

    @property
    def options(self) -> ScoringOptions:
        """The scoring settings."""
        return self._options

    def refresh(self) -> bool:
        """Load the champion if it changed; keep the current model on any failure.

        Returns:
            Whether a new model is now served.
        """
        with self._refresh_lock:
            with Session(self._engine) as session:
                row = repo.get_alias(session, self._options.model_name, "champion")
                if row is not None:
                    session.expunge(row)
            if row is None:
                if self._current is not None:
                    log.warning(
                        "model '%s' has no champion any more: still serving v%d",
                        self._options.model_name,
                        self._current.version,
                    )
                return False
            current = self._current
            if current is not None and current.sha256 == row.artifact_sha256:
                return False
            failed_at = self._failed.get(row.artifact_sha256)
            if failed_at is not None and time.monotonic() - failed_at < _RETRY_FAILED_SECONDS:
                return False
            started = time.perf_counter()
            try:
                loaded = self._load(row)
            except Exception as exc:  # a broken artifact must never stop the API serving
                self._failed[row.artifact_sha256] = time.monotonic()
                reason = f"cannot load {row.model_name} v{row.version}: {exc}"
                log.error("%s; still serving %s", reason, _describe(current))
                if self._on_error is not None:
                    self._on_error(reason)
                return False
            self._current = loaded  # the swap: one reference assignment
            log.info(
                "serving %s v%d (was %s), loaded and verified in %.2f s",
                loaded.name,
                loaded.version,
                _describe(current),
                time.perf_counter() - started,
            )
            if self._on_swap is not None:
                self._on_swap(loaded)
            return True

    def _load(self, row: ModelVersion) -> LoadedModel:
        label = f"model {row.model_name} v{row.version}"
        with tempfile.TemporaryDirectory(prefix="keel-api-") as tmp:
            folder = self._store.get_bundle(row.artifact_sha256, Path(tmp) / "bundle", label=label)
            bundle = load_bundle(folder)
        # One thread per request: requests run side by side, and a thread pool costs more
        # than it saves on a few rows. Set before the model is shared (set_param is not safe
        # while another thread predicts).
        bundle.booster.set_param({"nthread": 1})
        options = self._options
        schema = build_record_schema(
            bundle.spec, key=options.entity_key, max_records=options.max_records
        )
        history = None
        settings = settings_from_spec(bundle.spec.history)
        if settings is not None:
            if options.history_pool is None or options.target is None:
                raise RuntimeError(f"{label} reads outcome history, and no history is configured")
            history = HistoryIndex.build(options.history_pool(), settings, options.target)
        # Score one empty record before serving: the model works, and the first request
        # pays no warm-up.
        loaded = LoadedModel(
            name=row.model_name,
            version=row.version,
            sha256=row.artifact_sha256,
            bundle=bundle,
            schema=schema,
            card=model_card(row),
            loaded_at=dt.datetime.now(dt.UTC),
            history=history,
        )
        scored = score_matrix(
            bundle,
            loaded.matrix([dict.fromkeys(schema.numeric + schema.other)], None),
            threshold=options.threshold,
            reason_codes=options.reason_codes,
            reason_method=options.reason_method,
        )
        if len(scored.score) != 1 or not np.isfinite(scored.score[0]):
            raise RuntimeError(f"{label} does not score a record")
        return loaded

    def start(self, interval: float) -> None:
        """Poll the champion alias every `interval` seconds in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll, args=(interval,), name="keel-champion-watch", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (waits for a load in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.refresh()
            except Exception as exc:  # the database may be away for a while: keep serving
                log.warning("cannot check the champion of '%s': %s", self._options.model_name, exc)
                if self._on_error is not None:
                    self._on_error(f"cannot check the champion: {exc}")


def _describe(loaded: LoadedModel | None) -> str:
    return "nothing" if loaded is None else f"v{loaded.version}"
