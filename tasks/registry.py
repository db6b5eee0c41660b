"""Registry tasks: register the trained model, re-score champion and candidate, apply the gate.

Registry writes are side effects: never cached, retried only on a lost database connection.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from keel import lineage
from keel.config import Params
from keel.db import open_database, run_transaction
from keel.history import with_history
from keel.layout import ProjectPaths
from keel.metrics import score_report
from keel.model import ModelBundle, load_bundle
from keel.registry import repository as repo
from keel.registry.policy import Decision, Evaluation, decide_promotion
from keel.registry.store import ArtifactStore
from keel.settings import KeelSettings
from keel.splits import split_frame
from keel.table import add_times
from tasks.io import read_json, run_logger

__all__ = [
    "Registry",
    "adopt_decision",
    "apply_decision",
    "evaluate_versions",
    "gate_candidate",
    "gate_frames",
    "open_registry",
    "predict_known",
    "register_model",
]


@dataclass(frozen=True)
class Registry:
    """Where a project's registry lives: its database, its artifact store and who acts."""

    engine: Engine
    store: ArtifactStore
    actor: str

    def session(self) -> Session:
        """A new session (use `with registry.session() as s, s.begin():`)."""
        return Session(self.engine, expire_on_commit=False)


def open_registry(root: Path, actor: str | None = None) -> Registry:
    """Open (and migrate on first use) the registry of the project at `root`."""
    settings = KeelSettings()
    state = ProjectPaths(root).state_dir
    return Registry(
        engine=open_database(settings.resolved_database_url(state)),
        store=ArtifactStore(settings.resolved_artifact_url(state)),
        actor=actor or settings.resolved_actor(),
    )


def _lineage(
    root: Path, code_root: Path, params: Params, metadata: dict[str, Any]
) -> dict[str, Any]:
    hashes = lineage.lock_hashes(root) if lineage.has_pipeline(root) else {}
    return {
        "training_window": metadata.get("training_window", {}),
        "fingerprints": {**metadata.get("data_fingerprint", {}), "dvc": hashes},
        "code_version": lineage.code_version(code_root),
        "libraries": metadata.get("libraries", {}),
        "device": metadata.get("device", "cpu"),
        "params": params.model_dump(mode="json", by_alias=True),
    }


# No retries: registering is not idempotent (a retry after a lost commit acknowledgement could
# register twice), and the flow can simply be run again.
@task(name="register")
def register_model(
    root: Path, params: Params, actor: str | None = None, registry_root: Path | None = None
) -> tuple[int, bool]:
    """Store the trained bundle (content-addressed) and register it as the next version.

    Args:
        root: The folder the model was trained in.
        params: The params it was trained with.
        actor: Who registers it (default: KEEL_ACTOR or user@host).
        registry_root: The project whose registry and code version apply (default: root).

    Returns:
        The version, and whether it still needs the gate: true for a new version, and for one
        registered by an earlier run that was interrupted before its gate decision; false for
        an unchanged model already registered and gated (never registered twice).

    Raises:
        DatabaseUnavailableError: The connection was lost; the registration was rolled back.
    """
    registry = open_registry(registry_root or root, actor)
    paths = ProjectPaths(root)
    ref = registry.store.put_bundle(paths.model_dir)
    metadata = read_json(paths.model_dir / "metadata.json")
    metrics = read_json(paths.metrics)
    name = params.gate.model_name

    def register(connection: Connection) -> tuple[int, bool, bool]:
        with Session(bind=connection) as session:
            repo.lock_model(session, name)  # concurrent registrations of one artifact: one
            existing = repo.find_by_artifact(session, name, ref.sha256)
            if existing is not None:
                gated = repo.get_version(session, name, existing).gate_outcome is not None
                return existing, False, not gated
            row = repo.register_version(
                session,
                model_name=name,
                actor=registry.actor,
                artifact_uri=ref.uri,
                artifact_sha256=ref.sha256,
                metrics=metrics,
                flow_run_id=flow_run.get_id(),
                **_lineage(root, registry_root or root, params, metadata),
            )
            return row.version, True, True

    # Not retried (a retry after a lost commit acknowledgement could register twice).
    version, new, ungated = run_transaction(
        registry.engine, register, what=f"registering a version of {name}", attempts=1
    )
    if not new:
        if ungated:
            run_logger().warning(
                "%s v%d was registered by a run that stopped before its gate decision: "
                "gating it now",
                name,
                version,
            )
            return version, True
        run_logger().info("model unchanged: already registered as %s v%d", name, version)
        return version, False
    run_logger().info("registered %s v%d (artifact %s)", name, version, ref.sha256[:12])
    emit_event(
        event="keel.model.registered",
        resource={"prefect.resource.id": f"keel.model.{name}", "keel.version": str(version)},
        payload={"model": name, "version": version, "metrics": metrics["holdout"]},
    )
    return version, True


def gate_frames(root: Path, params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The recent labelled window both models are scored on (the split's holdout rows), and
    the whole table, whose known outcomes are the window's outcome history."""
    paths = ProjectPaths(root)
    frame = add_times(pd.read_parquet(paths.table), params.data)
    return frame[split_frame(frame, params.featurize.split).holdout], frame


def gate_window(root: Path, params: Params) -> pd.DataFrame:
    """The recent labelled window both models are scored on: the split's holdout rows."""
    return gate_frames(root, params)[0]


def predict_known(
    bundle: ModelBundle, records: pd.DataFrame, pool: pd.DataFrame, target: str
) -> np.ndarray:
    """Score records whose outcome is known, each with its history as of when it was made."""
    return bundle.predict(with_history(records, pool, bundle.spec.history, target))


@contextlib.contextmanager
def fetched_bundle(registry: Registry, row: Any) -> Iterator[Path]:
    """Fetch and verify a version's bundle into a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="keel-bundle-") as tmp:
        label = f"model {row.model_name} v{row.version}"
        yield registry.store.get_bundle(row.artifact_sha256, Path(tmp) / "bundle", label=label)


def _evaluation(
    bundle_dir: Path, rows: pd.DataFrame, pool: pd.DataFrame, params: Params, version: int
) -> Evaluation:
    scores = predict_known(load_bundle(bundle_dir), rows, pool, params.data.target)
    report = score_report(
        pd.to_numeric(rows[params.data.target]).to_numpy(),
        scores,
        task=params.data.task,
        threshold=params.evaluate.threshold,
        slices={col: rows[col].astype("string").to_numpy() for col in params.data.slice_by},
    )
    window = f"{len(rows)} labelled rows (split holdout)"
    return Evaluation(version, report["holdout"], report["slices"], window)


@task(name="evaluate-versions")
def evaluate_versions(
    root: Path, params: Params, candidate: int, registry_root: Path | None = None
) -> tuple[Evaluation, Evaluation | None]:
    """Re-score the candidate and the current champion on the same window (never stale metrics)."""
    registry = open_registry(registry_root or root)
    rows, pool = gate_frames(root, params)
    name = params.gate.model_name
    with registry.session() as session:
        candidate_row = repo.get_version(session, name, candidate)
        champion_row = repo.get_alias(session, name, "champion")
    with fetched_bundle(registry, candidate_row) as bundle:
        cand = _evaluation(bundle, rows, pool, params, candidate)
    champ = None
    if champion_row is not None:
        with fetched_bundle(registry, champion_row) as bundle:
            champ = _evaluation(bundle, rows, pool, params, champion_row.version)
    return cand, champ


def _decision_markdown(decision: Decision, name: str) -> str:
    lines = [f"# Gate decision for {name}: **{decision.outcome}**", "", decision.summary(), ""]
    lines += [f"- {reason}" for reason in decision.reasons]
    return "\n".join(lines) + "\n"


def _decide(root: Path, params: Params, candidate: int, registry_root: Path | None) -> Decision:
    """Re-score champion and candidate on the same window and decide with the pure gate."""
    cand, champ = evaluate_versions.fn(root, params, candidate, registry_root)
    decision = decide_promotion(cand, champ, params.gate)
    run_logger().info("gate: %s", decision.summary())
    name = params.gate.model_name
    create_markdown_artifact(
        key="gate-decision",
        markdown=_decision_markdown(decision, name),
        description=f"Promotion decision for {name} v{candidate}",
    )
    return decision


def _record_verdict(
    session: Session, registry: Registry, name: str, candidate: int, decision: Decision
) -> None:
    row = repo.get_version(session, name, candidate)
    row.gate_outcome = decision.outcome
    row.gate_decision = decision.to_json()
    repo.record_event(
        session,
        name,
        candidate,
        "evaluated",
        actor=registry.actor,
        reason=decision.summary(),
        metrics=dict(decision.candidate.metrics),
    )


def _carry_out(
    session: Session,
    registry: Registry,
    name: str,
    version: int,
    decision: Decision,
    refit_of: int | None = None,
) -> None:
    """Promote, park as challenger, or reject `version` as `decision` says.

    With `refit_of`, `version` is the refit of that gated candidate: it takes over the
    candidate's verdict (the candidate's outcome becomes `refit`) and is promoted in its place.
    """
    reason = decision.summary()
    metrics = dict(decision.candidate.metrics)
    if refit_of is not None:
        repo.get_version(session, name, refit_of).gate_outcome = "refit"
        repo.record_event(
            session,
            name,
            refit_of,
            "refit",
            actor=registry.actor,
            reason=f"passed the gate; refit as v{version} with its window's labels too",
            metrics=metrics,
        )
        row = repo.get_version(session, name, version)
        row.gate_outcome = decision.outcome
        row.gate_decision = {**decision.to_json(), "refit_of": refit_of}
        reason = f"refit of v{refit_of}, which passed the gate: {reason}"
    if decision.outcome == "promote":
        repo.promote(session, name, version, actor=registry.actor, reason=reason)
    elif decision.outcome == "await_approval":
        repo.set_challenger(session, name, version, actor=registry.actor, reason=reason)
    else:
        repo.record_event(
            session, name, version, "rejected", actor=registry.actor, reason=reason, metrics=metrics
        )


def _emit(name: str, version: int, decision: Decision, refit_of: int | None = None) -> None:
    event = {"promote": "promoted", "reject": "rejected"}.get(decision.outcome, "awaiting-approval")
    payload: dict[str, Any] = {"model": name, **decision.to_json()}
    if refit_of is not None:
        payload["refit_of"] = refit_of
    emit_event(
        event=f"keel.model.{event}",
        resource={"prefect.resource.id": f"keel.model.{name}", "keel.version": str(version)},
        payload=payload,
    )


def _gate(
    root: Path, params: Params, candidate: int, registry_root: Path | None, *, carry_out: bool
) -> Decision:
    """Decide, record the verdict and, with `carry_out`, act on it in the same transaction."""
    decision = _decide(root, params, candidate, registry_root)
    registry = open_registry(registry_root or root)
    name = params.gate.model_name
    with registry.session() as session, session.begin():
        _record_verdict(session, registry, name, candidate, decision)
        if carry_out:
            _carry_out(session, registry, name, candidate, decision)
    if carry_out:
        _emit(name, candidate, decision)
    return decision


@task(name="gate")
def apply_decision(
    root: Path, params: Params, candidate: int, registry_root: Path | None = None
) -> Decision:
    """Decide with the pure gate, then promote, park as challenger, or reject; audit it all
    (the verdict and what follows from it are one transaction)."""
    return _gate(root, params, candidate, registry_root, carry_out=True)


@task(name="gate-candidate")
def gate_candidate(
    root: Path, params: Params, candidate: int, registry_root: Path | None = None
) -> Decision:
    """The gate's verdict on a candidate, recorded and audited; nothing is promoted yet (a
    retraining with `retrain.refit` refits a passing candidate first, then `adopt_decision`)."""
    return _gate(root, params, candidate, registry_root, carry_out=False)


@task(name="adopt-decision")
def adopt_decision(
    registry_root: Path,
    params: Params,
    version: int,
    decision: Decision,
    refit_of: int | None = None,
) -> None:
    """Carry out a recorded verdict on `version` (the candidate, or its refit: `refit_of`)."""
    registry = open_registry(registry_root)
    name = params.gate.model_name
    with registry.session() as session, session.begin():
        _carry_out(session, registry, name, version, decision, refit_of)
    _emit(name, version, decision, refit_of)
