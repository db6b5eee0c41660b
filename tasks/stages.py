"""The five pipeline stages as Prefect tasks: read -> call keel -> write.

Each stage reads its inputs from the project's paths, calls the Prefect-free domain code in
`keel/`, and writes its outputs atomically, so a failed run never leaves a half-written file
and never overwrites an earlier model or feature set. `keel stage NAME` (what `dvc.yaml` runs)
calls the same functions through `.fn`, outside any flow.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import xgboost as xgb
from prefect import task

from keel.config import Params
from keel.drift import build_reference
from keel.features import FeatureSpec, build_features, encode_categories, fit_feature_spec
from keel.fingerprint import file_md5, tree_md5
from keel.history import HistorySettings, add_history
from keel.layout import ProjectPaths
from keel.metrics import calibration_table
from keel.model import load_bundle, predict, recency_weights
from keel.settings import KeelSettings
from keel.splits import split_frame
from keel.table import EVENT_TIME, LABEL_TIME, ORDER_TIME, add_entity_key, add_times, read_source
from keel.validation import DataValidationError, gate_report, load_suite, validate_frame
from tasks import engine
from tasks.io import atomic_dir, read_json, run_logger, write_json, write_parquet, write_text

__all__ = [
    "StageError",
    "evaluate",
    "featurize",
    "ingest",
    "inherit_metrics",
    "train",
    "validate",
]

TARGET = "_target"
KEY = "_key"
SLICE_PREFIX = "_slice:"
PARTS = ("train", "fit", "valid", "holdout", "reference")


class StageError(RuntimeError):
    """A stage's inputs are missing or stale; the message says which stage to run first."""


def _require(path: Path, stage: str) -> Path:
    if not path.exists():
        raise StageError(f"{path} is missing: run the '{stage}' stage first")
    return path


@task(name="ingest")
def ingest(root: Path, params: Params) -> dict[str, Any]:
    """Read the immutable source, give every record a stable key, write the interim table."""
    paths = ProjectPaths(root)
    source = root / params.ingest.source
    frame = add_entity_key(read_source(source), params.data.entity_key)
    write_parquet(paths.table, frame)
    run_logger().info("ingested %d rows x %d columns from %s", *frame.shape, source)
    return {"rows": len(frame), "source_md5": file_md5(source)}


def _reuse_validation(paths: ProjectPaths, cached: Path) -> dict[str, Any]:
    """Install a cached validation (result and Data Docs) as this project's; raise if it failed."""
    with atomic_dir(paths.validation_dir) as staging:
        shutil.copytree(cached / "validation", staging, dirs_exist_ok=True)
        payload = read_json(staging / "result.json")
        if payload.get("data_docs_index"):
            payload["data_docs_index"] = str(paths.validation_dir / "data_docs" / "index.html")
        write_json(staging / "result.json", payload)
    run_logger().info("validation reused: the same table and suite were validated before")
    if not payload["success"]:
        raise DataValidationError((cached / "message.txt").read_text(encoding="utf-8"))
    return {"success": True, "evaluated": payload["evaluated"], "rows": payload["row_count"]}


def _keep_validation(paths: ProjectPaths, cached: Path, message: str) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".validate.", dir=cached.parent))
    try:
        shutil.copytree(paths.validation_dir, staging / "validation")
        (staging / "message.txt").write_text(message, encoding="utf-8")
        staging.rename(cached)
    except OSError:  # another process kept the same result first
        shutil.rmtree(staging, ignore_errors=True)


@task(name="validate")
def validate(root: Path, params: Params) -> dict[str, Any]:
    """Run the expectation suite; write the result and Data Docs; raise if any check failed.

    GX takes tens of seconds on the full table; its result is a pure function of the table,
    the suite and `max_examples`, so it is kept in the cache folder (KEEL_CACHE_DIR) under a
    sha256 of the three and reused: retraining on an unchanged source validates it once.
    """
    paths = ProjectPaths(root)
    table = _require(paths.table, "ingest")
    suite_path = root / params.validate_.suite
    key = hashlib.sha256(
        f"{file_md5(table)}|{file_md5(suite_path)}|{params.validate_.max_examples}".encode()
    ).hexdigest()
    cached = KeelSettings().resolved_cache_dir(paths.state_dir) / "validate" / key
    if cached.is_dir():
        return _reuse_validation(paths, cached)
    frame = pd.read_parquet(table)
    suite = load_suite(suite_path)
    with atomic_dir(paths.validation_dir) as staging:
        report = validate_frame(
            frame,
            suite,
            max_examples=params.validate_.max_examples,
            data_docs_dir=staging / "data_docs",
        )
        if report.data_docs_index:
            final = paths.validation_dir / Path(report.data_docs_index).relative_to(staging)
            report = replace(report, data_docs_index=str(final))
        payload = {**report.to_json(), "table_md5": file_md5(table)}
        write_json(staging / "result.json", payload)
    cached.parent.mkdir(parents=True, exist_ok=True)
    _keep_validation(paths, cached, report.message())
    log = run_logger()
    if report.success:
        log.info("validation passed: %d expectations on %d rows", report.evaluated, len(frame))
    gate_report(report)
    return {"success": True, "evaluated": report.evaluated, "rows": report.row_count}


def _check_validated(paths: ProjectPaths) -> None:
    result = read_json(_require(paths.validation_result, "validate"))
    if not result.get("success"):
        raise StageError(
            f"{paths.validation_result} records a failed validation: fix the data and re-run "
            "'validate'; unvalidated data never reaches training"
        )
    if result.get("table_md5") != file_md5(paths.table):
        raise StageError(
            f"{paths.table} changed after it was validated: re-run the 'validate' stage"
        )


@task(name="featurize")
def featurize(root: Path, params: Params) -> dict[str, Any]:
    """Split the validated table, fit the feature spec on training rows, write every part."""
    paths = ProjectPaths(root)
    _check_validated(paths)
    data = params.data
    frame = add_times(pd.read_parquet(paths.table), data)
    history = params.featurize.history
    if history.columns:
        # Each record's outcome history as of when it was made: only outcomes known then.
        settings = HistorySettings(tuple(history.columns), history.window_days, history.prior)
        frame = add_history(frame, frame, settings=settings, target=data.target)
    split = split_frame(frame, params.featurize.split)
    spec = fit_feature_spec(frame[split.train], params.featurize)
    masks = {part: getattr(split, part) for part in PARTS if part != "reference"}
    masks["reference"] = _reference_rows(frame, params, split.train)
    features = build_features(frame, spec)
    features[KEY] = frame[data.entity_key.name]
    features[TARGET] = pd.to_numeric(frame[data.target], errors="raise")
    for col in (ORDER_TIME, LABEL_TIME):
        if col in frame.columns:
            features[col] = frame[col]
    for col in data.slice_by:
        features[SLICE_PREFIX + col] = frame[col].astype("string")
    with atomic_dir(paths.features_dir) as staging:
        for part, mask in masks.items():
            write_parquet(staging / f"{part}.parquet", features[mask])
        write_text(staging / "spec.json", spec.to_json())
    sizes = split.sizes()
    run_logger().info("featurized %d features; split sizes %s", len(spec.order), sizes)
    return {"features": len(spec.order), **sizes}


def _reference_rows(frame: pd.DataFrame, params: Params, train: pd.Series) -> pd.Series:
    """The records the drift reference describes: those made in the last monitoring window.

    Monitoring compares the records made in a window with this reference, so it is the same
    kind of population: records by when they were made (their features are known then; no
    label is used), in the `monitor.window_days` up to `split.reference_end` (default: the
    day before the cutoff). The records a model learns from are a different population (for
    the hotel data: bookings by arrival, made months earlier). Without an event time or a
    time split, the training rows stand in.
    """
    split = params.featurize.split
    if split.method != "time" or EVENT_TIME not in frame.columns or split.cutoff is None:
        return train
    last = split.reference_end or (split.cutoff - dt.timedelta(days=1))
    end = pd.Timestamp(last) + pd.Timedelta(days=1)
    start = end - pd.Timedelta(days=params.monitor.window_days)
    made = frame[EVENT_TIME]
    rows = (made >= start) & (made < end)
    return rows if bool(rows.any()) else train


def _load_part(paths: ProjectPaths, part: str, spec: FeatureSpec) -> pd.DataFrame:
    frame = pd.read_parquet(_require(paths.features(part), "featurize"))
    for col, cats in spec.categories.items():
        frame[col] = encode_categories(frame[col], cats)
    return frame


def _weights(frame: pd.DataFrame, params: Params, reference: dt.date | None) -> Any:
    half_life = params.train.recency_half_life_days
    if half_life is None or reference is None or ORDER_TIME not in frame.columns:
        return None
    return recency_weights(frame[ORDER_TIME], pd.Timestamp(reference), half_life)


def _library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "xgboost": xgb.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
    }


@task(name="train")
def train(root: Path, params: Params) -> dict[str, Any]:
    """Train XGBoost with early stopping on the time-ordered validation slice; save UBJSON."""
    paths = ProjectPaths(root)
    spec = FeatureSpec.from_json(_require(paths.feature_spec, "featurize").read_text())
    fit, valid, full = (_load_part(paths, p, spec) for p in ("fit", "valid", "train"))
    split = params.featurize.split
    result = engine.train_model(
        params.engine,
        fit[spec.order],
        fit[TARGET],
        valid[spec.order],
        valid[TARGET],
        data=params.data,
        config=params.train,
        fit_weight=_weights(fit, params, split.validation_start),
        full=(full[spec.order], full[TARGET], _weights(full, params, split.cutoff)),
    )
    window = {}
    if ORDER_TIME in full.columns:
        window = {
            "order_time_min": str(full[ORDER_TIME].min()),
            "order_time_max": str(full[ORDER_TIME].max()),
            "labels_known_by": str(split.cutoff),
        }
    metadata = {
        "task": params.data.task,
        "target": params.data.target,
        "feature_spec": "feature_spec.json",
        "model": "model.ubj",
        "params": result.params,
        "train_config": params.train.model_dump(mode="json"),
        "best_iteration": result.best_iteration,
        "validation_score": result.best_score,
        "rounds": result.rounds,
        "rows": {"fit": len(fit), "valid": len(valid), "train": len(full)},
        "training_window": window,
        "data_fingerprint": {
            "source_md5": file_md5(root / params.ingest.source),
            "features_md5": tree_md5(paths.features_dir),
        },
        "device": result.device,
        "engine": params.engine.kind,
        "libraries": _library_versions(),
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    # The population every later window is compared with (drift monitoring).
    recent = _load_part(paths, "reference", spec)
    reference = build_reference(
        recent[spec.order], predict(result.booster, recent[spec.order]), params.monitor.psi_bins
    )
    with atomic_dir(paths.model_dir) as staging:
        result.booster.save_model(str(staging / "model.ubj"))
        write_json(staging / "reference.json", reference)
        write_text(staging / "feature_spec.json", spec.to_json())
        write_json(staging / "metadata.json", metadata)
    run_logger().info(
        "trained %d rounds on %s (%d rows); validation score %.4f",
        result.rounds,
        result.device,
        len(full),
        result.best_score,
    )
    return {"rounds": result.rounds, "device": result.device, "validation": result.best_score}


@task(name="evaluate")
def evaluate(root: Path, params: Params) -> dict[str, Any]:
    """Score the time-based holdout; write DVC metrics and plots."""
    paths = ProjectPaths(root)
    bundle = load_bundle(_require(paths.model_dir, "train"))
    holdout = _load_part(paths, "holdout", bundle.spec)
    if holdout.empty:
        raise StageError(
            "the split has no holdout (featurize.split.no_holdout, a retraining's refit): "
            "there is nothing to evaluate; set it to false to hold out cutoff..holdout_end"
        )
    y, score = holdout[TARGET].to_numpy(), bundle.predict(holdout)
    report = engine.score_report(
        params.engine,
        y,
        score,
        task=params.data.task,
        threshold=params.evaluate.threshold,
        slices={col: holdout[SLICE_PREFIX + col].to_numpy() for col in params.data.slice_by},
    )
    gain = {
        k: float(np.sum(v))
        for k, v in bundle.booster.get_score(importance_type="total_gain").items()
    }
    order = bundle.spec.order
    importance = pd.DataFrame(
        {"feature": order, "total_gain": [gain.get(f, 0.0) for f in order]}
    ).sort_values("total_gain", ascending=False)
    paths.plots_dir.mkdir(parents=True, exist_ok=True)
    write_json(paths.metrics, report)
    write_text(paths.plots_dir / "importance.csv", importance.to_csv(index=False))
    if params.data.task == "binary":
        table = calibration_table(y, score, params.evaluate.calibration_bins)
        write_text(paths.plots_dir / "calibration.csv", table.to_csv(index=False))
    run_logger().info("holdout metrics: %s", {k: round(v, 4) for k, v in report["holdout"].items()})
    return report


@task(name="inherit-metrics")
def inherit_metrics(root: Path, gated: Path, version: int) -> dict[str, Any]:
    """A refit's metrics: those of the gated candidate it replaces (`version`, trained in
    `gated`), measured on the gate window that the refit then learnt too, since it has no
    holdout of its own. Its model's metadata and the metrics both say so."""
    paths = ProjectPaths(root)
    note = {
        "version": version,
        "note": f"holdout metrics of v{version} on its gate window; this refit also learnt it",
    }
    report = {**read_json(_require(ProjectPaths(gated).metrics, "evaluate")), "measured_on": note}
    write_json(paths.metrics, report)
    metadata = _require(paths.model_dir / "metadata.json", "train")
    write_json(metadata, {**read_json(metadata), "refit_of": note})
    return report
