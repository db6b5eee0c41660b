"""Production tasks: score a batch, record outcomes, monitor a window.

Each takes a logical date `as_of`, so the same code serves schedules, backfills and replays.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import fnmatch
import functools
import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from sqlalchemy import Connection, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from keel.config import DataConfig, Params
from keel.db import run_transaction
from keel.features import build_features
from keel.history import HistoryIndex, settings_from_spec
from keel.layout import ProjectPaths
from keel.metrics import classification_metrics, regression_metrics
from keel.model import ModelBundle, load_bundle
from keel.registry import repository as repo
from keel.settings import KeelSettings
from keel.store import (
    DriftResult,
    MonitoringMetric,
    Outcome,
    Prediction,
    QuarantinedRow,
    ScoreBatch,
    WriteSummary,
    batch_exists,
    record_outcomes,
    write_batch,
)
from keel.table import EVENT_TIME, LABEL_TIME, add_entity_key, add_times, read_source
from keel.validation import load_suite, validate_frame
from tasks import engine
from tasks.io import prune_cache, run_logger, write_text
from tasks.registry import Registry, fetched_bundle, open_registry

__all__ = [
    "BatchRejectedError",
    "MonitorResult",
    "ScoreResult",
    "as_utc",
    "load_records",
    "monitor_window",
    "record_known_outcomes",
    "score_batch",
]


KEEP_CACHE_DAYS = 7  # cached validation results and scores older than this are removed


class BatchRejectedError(RuntimeError):
    """A scoring batch failed validation as a whole, or the policy rejects invalid rows."""


def as_utc(value: dt.datetime) -> dt.datetime:
    """A timezone-aware UTC datetime (naive values are taken as UTC)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _naive(value: dt.datetime) -> pd.Timestamp:
    return pd.Timestamp(as_utc(value).replace(tzinfo=None))


@functools.lru_cache(maxsize=2)
def _feed(path: Path, stamp: tuple[int, int], data_json: str) -> pd.DataFrame:
    data = DataConfig.model_validate_json(data_json)
    return add_times(add_entity_key(read_source(path), data.entity_key), data)


def load_records(root: Path, params: Params) -> pd.DataFrame:
    """The configured source with entity keys and time columns (the production feed).

    Read once per process while the file is unchanged (same size and modification time): a
    replay or a long-running server calls the flows many times on the same source. Under
    pandas' copy-on-write the cached frame cannot be changed through a caller's copy.
    """
    path = (root / params.ingest.source).resolve()
    try:
        info = path.stat()
    except OSError:
        return _feed.__wrapped__(path, (0, 0), params.data.model_dump_json())
    return _feed(path, (info.st_mtime_ns, info.st_size), params.data.model_dump_json())


@dataclass(frozen=True)
class BatchCheck:
    """What validation says about a batch: whether it is unusable, and which rows are invalid."""

    table_level_failed: bool
    invalid_rows: dict[Any, list[str]]
    message: str


def _fingerprint(frame: pd.DataFrame, suite_path: Path) -> str:
    digest = hashlib.sha256(suite_path.read_bytes())
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()


def validate_batch(root: Path, params: Params, frame: pd.DataFrame) -> BatchCheck:
    """Validate a batch row by row with the suite, reusing an earlier result for the same data.

    Great Expectations costs about a second per batch whatever its size; its result is a pure
    function of the suite and the data, so it is kept under the cache folder keyed by a sha256
    of the suite file, the dtypes and every value (with the row labels). A replay that scores
    the same batch for several strategies, or a re-run, validates it once.
    """
    suite_path = root / params.validate_.suite
    if not frame.index.astype(str).is_unique:  # rows could not be told apart in a cached result
        report = validate_frame(frame, load_suite(suite_path), row_level=True)
        return BatchCheck(report.table_level_failed, report.invalid_rows, report.message())
    cache = KeelSettings().resolved_cache_dir(ProjectPaths(root).state_dir) / "validation"
    cache.mkdir(parents=True, exist_ok=True)
    entry = cache / f"{_fingerprint(frame, suite_path)}.json"
    if not entry.is_file():
        prune_cache(cache, KEEP_CACHE_DAYS)
    # Processes validating the same batch at once (a replay's strategies): one runs GX, the
    # others wait on the lock and read its result.
    with (cache / f"{entry.stem}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if entry.is_file():
            saved = json.loads(entry.read_text(encoding="utf-8"))
            labels = dict(zip(frame.index.astype(str), frame.index, strict=True))
            return BatchCheck(
                saved["table_level_failed"],
                {labels[label]: reasons for label, reasons in saved["invalid_rows"]},
                saved["message"],
            )
        report = validate_frame(frame, load_suite(suite_path), row_level=True)
        check = BatchCheck(report.table_level_failed, report.invalid_rows, report.message())
        payload = {
            "table_level_failed": check.table_level_failed,
            "invalid_rows": [[str(k), reasons] for k, reasons in check.invalid_rows.items()],
            "message": check.message,
        }
        write_text(entry, json.dumps(payload))
    return check


def _check_as_of(as_of: dt.datetime) -> None:
    if as_utc(as_of) > dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
        raise BatchRejectedError(
            f"as_of {as_of.isoformat()} is in the future: nothing can be known about it yet"
        )


def _champion(registry: Registry, name: str) -> Any:
    with registry.session() as session:
        champion = repo.get_alias(session, name, "champion")
    if champion is None:
        raise BatchRejectedError(f"model '{name}' has no champion: run `keel train` first")
    return champion


@dataclass(frozen=True)
class ScoreResult:
    """What one scoring run did."""

    batch_id: str
    selected: int
    written: int
    quarantined: int
    skipped: bool
    model_version: int | None
    message: str


@task(name="score-batch")
def score_batch(
    root: Path,
    params: Params,
    as_of: dt.datetime,
    records: pd.DataFrame | None = None,
    since: dt.datetime | None = None,
) -> ScoreResult:
    """Select, validate, score (with reason codes) and write one batch, atomically.

    Args:
        root: The project.
        params: Its params.
        as_of: The logical date: records made in (as_of - period, as_of] with no known label.
        records: The source feed (default: read from `ingest.source`).
        since: Start of the period instead of `as_of - score.period_days` (a first batch
            that takes over every record still open, e.g. at the start of a replay).
    """
    _check_as_of(as_of)
    log = run_logger()
    registry = open_registry(root)
    name = params.gate.model_name
    start = (
        _naive(as_of) - pd.Timedelta(days=params.score.period_days)
        if since is None
        else _naive(since)
    )
    batch_id = f"{name}@{as_utc(as_of).isoformat()}"
    with registry.session() as session:
        if batch_exists(session, batch_id):
            msg = f"batch {batch_id} is already scored: nothing written"
            log.info(msg)
            return ScoreResult(batch_id, 0, 0, 0, True, None, msg)
    feed = load_records(root, params) if records is None else records
    event, known = feed[EVENT_TIME], feed[LABEL_TIME]
    end = _naive(as_of)
    made = (event > start) & (event <= end)
    # What the features may know: by default everything known at as_of, for the records still
    # open then. As made (`include_resolved`): every record of the period (a first batch that
    # takes over the backlog: those still open), each with only what was known when it was made.
    as_made = params.score.include_resolved
    batch = feed[made] if as_made and since is None else feed[made & ~(known <= end)]
    known_at = None if as_made else as_utc(as_of)
    if batch.empty:
        which = "records made" if as_made and since is None else "open records"
        msg = f"nothing to score as of {as_of.isoformat()}: no {which} in ({start}, {end}]"
        log.info(msg)
        return ScoreResult(batch_id, 0, 0, 0, False, None, msg)
    raw_columns = [
        c for c in feed.columns if not c.startswith("_") and c not in params.data.derived
    ]
    checked = validate_batch(root, params, batch[raw_columns])
    if checked.table_level_failed or (
        checked.invalid_rows and params.score.invalid_rows == "reject"
    ):
        raise BatchRejectedError(f"batch {batch_id} rejected: {checked.message}")
    key = params.data.entity_key.name
    bad = batch.index.isin(list(checked.invalid_rows))
    quarantined = [
        QuarantinedRow(
            batch_id=batch_id,
            entity_key=str(row[key]),
            reasons=checked.invalid_rows[idx],
            record=json.loads(pd.Series(row[raw_columns]).to_json(date_format="iso")),
        )
        for idx, row in batch[bad].iterrows()
    ]
    good = batch[~bad]
    champion = _champion(registry, name)
    now = dt.datetime.now(dt.UTC)
    row = ScoreBatch(
        batch_id=batch_id,
        model_name=name,
        model_version=champion.version,
        as_of=as_utc(as_of),
        rows=len(good),
        quarantined=len(quarantined),
    )
    with fetched_bundle(registry, champion) as bundle_dir:
        bundle = load_bundle(bundle_dir)
    # The outcome history the champion's features read: what is known at scoring time.
    good = _with_history(good, feed, bundle.spec.history, params.data.target, known_at)
    parts = _scored_parts(root, params, champion.artifact_sha256, bundle, good)

    def write(connection: Connection) -> WriteSummary:
        # Fresh rows and frames on each attempt: a lost connection leaves the last ones bound.
        frames = (_prediction_frame(pd.read_parquet(p), good, key, row, now) for p in parts)
        return write_batch(connection, _fresh(row), frames, [_fresh(q) for q in quarantined])

    summary = run_transaction(registry.engine, write, what=f"writing batch {batch_id}", logger=log)
    msg = (
        f"batch {batch_id}: scored {summary.written} records with {name} v{champion.version}"
        f", quarantined {summary.quarantined}"
        if not summary.skipped
        else f"batch {batch_id} was written concurrently by another run: nothing written"
    )
    log.info(msg)
    return ScoreResult(
        batch_id,
        len(batch),
        summary.written,
        summary.quarantined,
        summary.skipped,
        champion.version,
        msg,
    )


def _prediction_frame(
    scored: pd.DataFrame, good: pd.DataFrame, key: str, batch: ScoreBatch, now: dt.datetime
) -> pd.DataFrame:
    """One part of a batch's prediction rows (the columns `write_batch` takes)."""
    return pd.DataFrame(
        {
            "batch_id": batch.batch_id,
            "entity_key": good.loc[scored.index, key].astype(str).to_numpy(),
            "as_of": batch.as_of,
            "model_name": batch.model_name,
            "model_version": batch.model_version,
            "score": scored["score"].to_numpy(),
            "decision": scored["decision"].to_numpy(),
            "reasons": scored["reasons"].to_numpy(),
            "scored_at": now,
        }
    )


def _scored_parts(
    root: Path, params: Params, model_sha256: str, bundle: ModelBundle, good: pd.DataFrame
) -> list[Path]:
    """Score the records chunk by chunk into parquet parts (memory bounded by one chunk).

    The scores and reason codes are a pure function of the model (its sha256), the records
    and the scoring settings, so the parts are kept in the cache folder under a sha256 of
    those: strategies of a replay that share a champion, or a re-run, score a batch once.
    """
    cfg = params.score
    digest = hashlib.sha256(
        json.dumps(
            [
                model_sha256,
                params.evaluate.threshold,
                cfg.reason_codes,
                cfg.reason_method,
                cfg.chunk_rows,
            ]
        ).encode()
    )
    digest.update(_fingerprint(good, root / params.validate_.suite).encode())
    cache = KeelSettings().resolved_cache_dir(ProjectPaths(root).state_dir) / "scores"
    cache.mkdir(parents=True, exist_ok=True)
    entry = cache / digest.hexdigest()
    with (cache / f"{entry.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if entry.is_dir():
            return sorted(entry.glob("*.parquet"))
        prune_cache(cache, KEEP_CACHE_DAYS)
        chunks = engine.iter_scored(
            params.engine,
            bundle,
            good,
            threshold=params.evaluate.threshold,
            reason_codes=cfg.reason_codes,
            chunk_rows=cfg.chunk_rows,
            reason_method=cfg.reason_method,
        )
        staging = Path(tempfile.mkdtemp(prefix=".scores.", dir=cache))
        for number, scored in enumerate(chunks):
            pd.DataFrame(
                {
                    "score": scored["score"].to_numpy(),
                    "decision": scored["decision"].to_numpy(),
                    "reasons": [json.dumps(r, separators=(",", ":")) for r in scored["reasons"]],
                },
                index=scored.index,
            ).to_parquet(staging / f"{number:06d}.parquet")
        staging.rename(entry)
    return sorted(entry.glob("*.parquet"))


def _fresh(row: Any) -> Any:
    """A new, unattached copy of an ORM row (the columns that were set on it)."""
    columns = sa_inspect(type(row)).column_attrs
    return type(row)(**{c.key: getattr(row, c.key) for c in columns if c.key in vars(row)})


OUTCOMES_QUARANTINE = "outcomes"
"""The quarantine `batch_id` of outcomes whose label is not allowed (each held once)."""


def _unusable_labels(params: Params, known: pd.DataFrame) -> list[QuarantinedRow]:
    """Outcomes whose label the task cannot use (binary: not 0 or 1; else not finite)."""
    target, key = params.data.target, params.data.entity_key.name
    labels = pd.to_numeric(known[target], errors="coerce")
    if params.data.task == "binary":
        bad, rule = ~labels.isin([0, 1]), "is not 0 or 1"
    else:
        bad, rule = ~np.isfinite(labels.astype("float64")), "is not a finite number"
    raw = [c for c in known.columns if not c.startswith("_") and c not in params.data.derived]
    return [
        QuarantinedRow(
            batch_id=OUTCOMES_QUARANTINE,
            entity_key=str(row[key]),
            reasons=[f"label {row[target]!r} of '{target}' {rule}"],
            record=json.loads(pd.Series(row[raw]).to_json(date_format="iso")),
        )
        for _, row in known[bad.to_numpy()].drop_duplicates(key).iterrows()
    ]


@task(name="record-outcomes")
def record_known_outcomes(
    root: Path, params: Params, as_of: dt.datetime, records: pd.DataFrame | None = None
) -> dict[str, int]:
    """Record every outcome known by `as_of`; already recorded ones are ignored.

    An outcome whose label the task cannot use (a binary label that is not 0 or 1) is never
    recorded: it is quarantined once, with the reason, under the batch id `outcomes`.
    """
    _check_as_of(as_of)
    registry = open_registry(root)
    feed = load_records(root, params) if records is None else records
    known = feed[(feed[LABEL_TIME] <= _naive(as_of)) & feed[params.data.target].notna()]
    unusable = _unusable_labels(params, known)
    held = {q.entity_key for q in unusable}
    known = known[~known[params.data.entity_key.name].astype(str).isin(held).to_numpy()]
    outcomes = pd.DataFrame(
        {
            "entity_key": known[params.data.entity_key.name].astype(str),
            "label": pd.to_numeric(known[params.data.target]),
            "observed_at": known[LABEL_TIME].dt.tz_localize("UTC"),
        }
    )

    def write(connection: Connection) -> tuple[int, int, int]:
        fresh, never_scored = record_outcomes(connection, outcomes)
        already = set(
            connection.scalars(
                select(QuarantinedRow.entity_key).where(
                    QuarantinedRow.batch_id == OUTCOMES_QUARANTINE
                )
            )
        )
        new_held = [_fresh(q) for q in unusable if q.entity_key not in already]
        with Session(bind=connection) as session:
            session.add_all(new_held)
            session.flush()
        return fresh, never_scored, len(new_held)

    log = run_logger()
    fresh, never_scored, quarantined = run_transaction(
        registry.engine, write, what=f"recording the outcomes as of {as_of.isoformat()}", logger=log
    )
    log.info(
        "outcomes as of %s: %d new (%d never scored), %d already known, %d quarantined",
        as_of.isoformat(),
        fresh,
        never_scored,
        len(outcomes) - fresh,
        quarantined,
    )
    if unusable:
        log.warning(
            "%d outcomes have a label the model cannot use and are held in quarantine "
            "(batch '%s'), e.g. %s: %s",
            len(unusable),
            OUTCOMES_QUARANTINE,
            unusable[0].entity_key,
            unusable[0].reasons[0],
        )
    return {
        "known": len(outcomes),
        "new": fresh,
        "never_scored": never_scored,
        "quarantined": quarantined,
    }


@dataclass(frozen=True)
class MonitorResult:
    """What a monitoring run measured and which thresholds were crossed.

    `metrics` is the champion's accuracy on the outcomes that arrived in the window (the
    champion re-scores those records, so the verdict is about the model in service now, not
    about whichever older version happened to score them); `served` is the accuracy of the
    predictions that were actually served for those records; `drift` is the PSI of every
    feature of the records made in the window against the champion's reference (the records
    made in the window before it was trained).
    """

    as_of: str
    model_version: int | None
    rows: int
    labelled: int
    metrics: dict[str, float] = field(default_factory=dict)
    served: dict[str, float] = field(default_factory=dict)
    drift: dict[str, float] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)


def _performance(params: Params, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    if params.data.task == "binary":
        metrics = classification_metrics(labels, scores, params.evaluate.threshold)
    else:
        metrics = regression_metrics(labels, scores)
    return {k: float(v) for k, v in metrics.items()}


def _degraded(params: Params, metrics: dict[str, float]) -> list[str]:
    cfg, out = params.monitor, []
    if metrics and cfg.min_roc_auc is not None and metrics.get("roc_auc", 1.0) < cfg.min_roc_auc:
        out.append("roc_auc")
    if metrics and cfg.max_log_loss is not None and metrics.get("log_loss", 0.0) > cfg.max_log_loss:
        out.append("log_loss")
    return out


def _resolved(session: Session, name: str, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Served predictions whose outcome arrived in (start, end]: the latest one made before it."""
    rows = session.execute(
        select(
            Prediction.entity_key,
            Prediction.score,
            Prediction.model_version,
            Prediction.as_of,
            Outcome.label,
            Outcome.observed_at,
        )
        .join(Outcome, Outcome.entity_key == Prediction.entity_key)
        .where(
            Prediction.model_name == name,
            Outcome.observed_at > start,
            Outcome.observed_at <= end,
        )
    ).all()
    frame = pd.DataFrame(
        rows, columns=["entity_key", "score", "version", "pred_as_of", "label", "observed_at"]
    )
    made = pd.to_datetime(frame["pred_as_of"], utc=True)
    frame = frame[made <= pd.to_datetime(frame["observed_at"], utc=True)]
    return frame.sort_values("pred_as_of").drop_duplicates("entity_key", keep="last")


def _scored(session: Session, name: str, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Predictions made in (start, end], one per record (its latest)."""
    rows = session.execute(
        select(Prediction.entity_key, Prediction.score, Prediction.as_of).where(
            Prediction.model_name == name, Prediction.as_of > start, Prediction.as_of <= end
        )
    ).all()
    frame = pd.DataFrame(rows, columns=["entity_key", "score", "pred_as_of"])
    return frame.sort_values("pred_as_of").drop_duplicates("entity_key", keep="last")


def _window_rows(end: dt.datetime, start: dt.datetime, name: str, version: int) -> dict[str, Any]:
    return {
        "as_of": end,
        "window_start": start,
        "window_end": end,
        "model_name": name,
        "model_version": version,
    }


def _object_keys(keys: pd.Series) -> pd.Series:
    """Keys as plain Python strings: pandas' hash table, not Arrow's slow `isin` on `str`."""
    return pd.Series(keys.astype(str).to_numpy(dtype=object), index=keys.index, dtype=object)


_KEYED: dict[int, tuple[pd.DataFrame, pd.DataFrame]] = {}
_HISTORY: dict[tuple[int, str, str], tuple[pd.DataFrame, HistoryIndex]] = {}


def _with_history(
    records: pd.DataFrame,
    feed: pd.DataFrame,
    history: dict[str, Any],
    target: str,
    as_of: dt.datetime | None = None,
) -> pd.DataFrame:
    """`keel.history.with_history`, with the feed's outcome index built once per cached feed
    and history settings (a replay or a server calls the flows many times on one feed)."""
    settings = settings_from_spec(history)
    if settings is None:
        return records
    key = (id(feed), json.dumps(history, sort_keys=True, default=str), target)
    hit = _HISTORY.get(key)
    if hit is None or hit[0] is not feed:
        if len(_HISTORY) >= 4:
            _HISTORY.clear()
        hit = (feed, HistoryIndex.build(feed, settings, target))
        _HISTORY[key] = hit
    return hit[1].apply(records, as_of)


def _keyed(feed: pd.DataFrame, key: str) -> pd.DataFrame:
    """The feed indexed by its entity key (built once per cached feed)."""
    hit = _KEYED.get(id(feed))
    if hit is not None and hit[0] is feed:
        return hit[1]
    keyed = feed.set_index(pd.Index(_object_keys(feed[key]).to_numpy(), dtype=object))
    keyed = keyed[~keyed.index.duplicated()]
    _KEYED.clear()
    _KEYED[id(feed)] = (feed, keyed)
    return keyed


@task(name="monitor-window")
def monitor_window(
    root: Path, params: Params, as_of: dt.datetime, records: pd.DataFrame | None = None
) -> MonitorResult:
    """Measure accuracy (on the outcomes that arrived) and drift of the window ending at `as_of`.

    Accuracy: the outcomes observed in (as_of - window, as_of] are joined with the predictions
    served for them (per serving version: `served_*` metrics) and re-scored by the current
    champion (its metrics, and the performance verdict). Label delay makes the newest
    predictions' outcomes a biased sample (cancellations are known before check-outs), so
    the window is defined by when the truth arrived, not by when the record was scored.
    Drift: PSI of the records made in the window (by event time, as the source holds them;
    without an event time, those scored in the window) against the champion's reference.
    """
    _check_as_of(as_of)
    cfg = params.monitor
    registry = open_registry(root)
    name = params.gate.model_name
    end = as_utc(as_of)
    start = end - dt.timedelta(days=cfg.window_days)
    champion = _champion(registry, name)
    version = int(champion.version)
    with Session(registry.engine) as session:
        resolved = _resolved(session, name, start, end)
        scored = _scored(session, name, start, end)
    if resolved.empty and scored.empty:
        run_logger().info("monitor %s: no predictions or outcomes in the window", end.isoformat())
        return MonitorResult(end.isoformat(), version, 0, 0)
    feed = load_records(root, params) if records is None else records
    key = params.data.entity_key.name
    by_key = _keyed(feed, key)
    served: dict[int, dict[str, float]] = {}
    for served_version, part in resolved.groupby("version"):
        if len(part) >= cfg.min_rows:
            served[int(served_version)] = _performance(
                params, part["label"].to_numpy(), part["score"].to_numpy()
            )
    with fetched_bundle(registry, champion) as bundle_dir:
        bundle = load_bundle(bundle_dir)
        reference_file = bundle_dir / "reference.json"
        reference = json.loads(reference_file.read_text()) if reference_file.is_file() else None
    metrics: dict[str, float] = {}
    known = resolved[_object_keys(resolved["entity_key"]).isin(by_key.index)]
    if len(known) >= cfg.min_rows:
        # Each record with its outcome history as of when it was made (its own outcome, known
        # now, must not be part of it).
        resolved_records = _with_history(
            by_key.loc[known["entity_key"]], feed, bundle.spec.history, params.data.target
        )
        rescored = bundle.predict(resolved_records)
        metrics = _performance(params, known["label"].to_numpy(), rescored)
    all_served = (
        _performance(params, resolved["label"].to_numpy(), resolved["score"].to_numpy())
        if len(resolved) >= cfg.min_rows
        else {}
    )
    drifts = []
    if EVENT_TIME in feed.columns:
        # The population of the window: every record made in it, as the source holds it (the
        # drift reference is the same kind of population, from before training). Records
        # resolved before their batch was scored belong to it too.
        made = feed[EVENT_TIME]
        window_records = feed[(made > _naive(start)) & (made <= _naive(end))]
    else:
        scored_keys = _object_keys(scored["entity_key"])
        window_records = by_key.loc[scored_keys[scored_keys.isin(by_key.index)]]
    if reference is None:
        run_logger().warning("%s v%d has no training reference: drift not measured", name, version)
    elif len(window_records):
        # Features as when each record was made, like the reference's.
        window_records = _with_history(
            window_records, feed, bundle.spec.history, params.data.target
        )
        drifts = engine.drift_report(
            params.engine,
            reference,
            build_features(window_records, bundle.spec),
            bundle.predict(window_records),
            cfg.psi_threshold,
            ks_threshold=cfg.ks_threshold,
            chi2_alpha=cfg.chi2_alpha,
        )
    drifts = [
        d for d in drifts if not any(fnmatch.fnmatchcase(d.feature, p) for p in cfg.ignore_features)
    ]
    with registry.engine.begin() as connection, Session(bind=connection) as session:
        rows = {**metrics, "volume": float(len(scored)), "labelled": float(len(resolved))}
        for served_version, values in served.items():
            base = _window_rows(end, start, name, served_version)
            session.add_all(
                MonitoringMetric(**base, metric=f"served_{m}", value=_finite(v))
                for m, v in values.items()
            )
        base = _window_rows(end, start, name, version)
        session.add_all(
            MonitoringMetric(**base, metric=m, value=_finite(v)) for m, v in rows.items()
        )
        session.add_all(
            DriftResult(
                **base,
                feature=d.feature,
                statistic=d.statistic,
                value=d.value,
                threshold=d.threshold,
                drifted=d.drifted,
            )
            for d in drifts
        )
        session.flush()
    result = MonitorResult(
        as_of=end.isoformat(),
        model_version=version,
        rows=len(scored),
        labelled=len(resolved),
        metrics=metrics,
        served=all_served,
        drift={d.feature: round(d.value, 4) for d in drifts if d.statistic == "psi"},
        drifted=sorted({d.feature for d in drifts if d.drifted}),
        degraded=_degraded(params, metrics),
    )
    run_logger().info(
        "monitor %s: %d scored, %d outcomes arrived; champion v%d %s; drifted %s, degraded %s",
        result.as_of,
        result.rows,
        result.labelled,
        version,
        {k: round(v, 4) for k, v in metrics.items() if k in ("roc_auc", "log_loss", "rmse")},
        result.drifted or "none",
        result.degraded or "none",
    )
    return result


def _finite(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)
