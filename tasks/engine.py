"""The execution engine of `params.yaml` (`engine:`): this process, or a Dask cluster.

Stages call these functions instead of the one-machine ones; with `engine.kind: local` each is
exactly the `keel` function it wraps. With `dask`:

- `train_model` trains with `xgboost.dask` (`keel.distributed.train_model_dask`);
- `iter_scored` scores Dask dataframe partitions in parallel (`keel.distributed`);
- `drift_report` runs one `feature-drift` task per feature and `score_report` one
  `slice-metrics` task per slice value, on Prefect's `DaskTaskRunner` inside a flow run (so
  each is a task run in the UI), or directly on the cluster outside one (`keel stage`).

The cluster is the scheduler at `KEEL_DASK_ADDRESS` or `engine.address`; without either, a
local cluster of `engine.n_workers` processes is started once per process and shared by every
step of the run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client, LocalCluster
from prefect import Task, task
from prefect.context import FlowRunContext
from prefect_dask.task_runners import DaskTaskRunner

from keel import drift, metrics, model, scoring
from keel.config import EngineConfig
from keel.distributed import iter_scored_dask, train_model_dask
from keel.drift import FeatureDrift
from keel.model import TrainResult
from keel.settings import KeelSettings
from tasks.io import run_logger

__all__ = [
    "dask_client",
    "drift_report",
    "feature_drift",
    "iter_scored",
    "run_each",
    "scheduler_address",
    "score_report",
    "slice_metrics",
    "task_runner",
    "train_model",
]

_clusters: dict[tuple[int, int], LocalCluster] = {}
_clusters_lock = threading.Lock()


def scheduler_address(config: EngineConfig) -> str | None:
    """The configured scheduler: `KEEL_DASK_ADDRESS`, else `engine.address`, else None."""
    return KeelSettings().dask_address or config.address


def _local_cluster(config: EngineConfig) -> LocalCluster:
    key = (config.n_workers, config.threads_per_worker)
    with _clusters_lock:
        cluster = _clusters.get(key)
        if cluster is None or cluster.status.name != "running":
            run_logger().info(
                "starting a local Dask cluster: %d worker processes x %d threads",
                *key,
            )
            # Kept for the life of the process (distributed closes it at exit): training,
            # scoring and the fan-out tasks of one run share it.
            cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=config.n_workers,
                threads_per_worker=config.threads_per_worker,
                processes=True,
                dashboard_address=None,
            )
            _clusters[key] = cluster
        return cluster


def _address(config: EngineConfig) -> str:
    return scheduler_address(config) or str(_local_cluster(config).scheduler_address)


@contextlib.contextmanager
def dask_client(config: EngineConfig) -> Iterator[Client]:
    """A client of the configured cluster, closed on exit (a local cluster stays up)."""
    client = Client(_address(config), set_as_default=False)  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


def task_runner(config: EngineConfig) -> DaskTaskRunner | None:
    """A `DaskTaskRunner` on the configured cluster, or None for the local engine (use the
    flow's default runner); for `flow.with_options(task_runner=...)`."""
    return DaskTaskRunner(address=_address(config)) if config.kind == "dask" else None


def run_each(
    config: EngineConfig, job: Task[..., Any], calls: Sequence[dict[str, Any]]
) -> list[Any]:
    """Run independent calls of one task, in order of `calls`.

    Local engine: in this process, one after the other (no task runs, as before). Dask engine:
    in parallel on the cluster, through a `DaskTaskRunner` inside a flow run (each call is a
    task run), else as plain Dask tasks.
    """
    if config.kind != "dask":
        return [job.fn(**call) for call in calls]
    if FlowRunContext.get() is None:
        with dask_client(config) as client:
            futures = [client.submit(job.fn, pure=False, **call) for call in calls]
            return list(client.gather(futures))  # type: ignore[no-untyped-call]
    with DaskTaskRunner(address=_address(config)) as runner:
        submitted = [runner.submit(job, parameters=dict(call)) for call in calls]
        return [future.result() for future in submitted]


def train_model(config: EngineConfig, /, *args: Any, **kwargs: Any) -> TrainResult:
    """`keel.model.train_model` on the configured engine (same arguments)."""
    if config.kind != "dask":
        return model.train_model(*args, **kwargs)
    with dask_client(config) as client:
        run_logger().info("training with xgboost.dask on %s", _address(config))
        return train_model_dask(client, *args, **kwargs)


def iter_scored(config: EngineConfig, /, *args: Any, **kwargs: Any) -> Iterator[pd.DataFrame]:
    """`keel.scoring.iter_scored` on the configured engine (same arguments and chunks)."""
    if config.kind != "dask":
        yield from scoring.iter_scored(*args, **kwargs)
        return
    with dask_client(config) as client:
        yield from iter_scored_dask(client, *args, **kwargs)


def _feature_drift(
    feature: str,
    reference: dict[str, Any],
    features: pd.DataFrame,
    scores: np.ndarray,
    threshold: float,
    ks_threshold: float | None,
    chi2_alpha: float | None,
) -> list[FeatureDrift]:
    out = drift.drift_report(
        reference,
        features,
        scores,
        threshold,
        ks_threshold=ks_threshold,
        chi2_alpha=chi2_alpha,
    )
    return [d for d in out if d.feature == feature]


feature_drift: Task[..., list[FeatureDrift]] = task(
    name="feature-drift", task_run_name="drift-{feature}"
)(_feature_drift)


def drift_report(
    config: EngineConfig,
    reference: dict[str, Any],
    features: pd.DataFrame,
    scores: np.ndarray,
    threshold: float,
    *,
    ks_threshold: float | None = None,
    chi2_alpha: float | None = None,
) -> list[FeatureDrift]:
    """`keel.drift.drift_report`, one task per feature (and one for the score) on Dask.

    The result is the same list in the same order as on one machine.
    """
    if config.kind != "dask":
        return drift.drift_report(
            reference,
            features,
            scores,
            threshold,
            ks_threshold=ks_threshold,
            chi2_alpha=chi2_alpha,
        )
    limits = {"threshold": threshold, "ks_threshold": ks_threshold, "chi2_alpha": chi2_alpha}
    calls = [
        {
            "feature": name,
            "reference": {"features": {name: entry}, "score": reference["score"]},
            "features": features[[name]],
            "scores": scores,
            **limits,
        }
        for name, entry in reference["features"].items()
        if name in features.columns
    ]
    calls.append(
        {
            "feature": "__score__",
            "reference": {"features": {}, "score": reference["score"]},
            "features": features.iloc[:, :0],
            "scores": scores,
            **limits,
        }
    )
    return [d for found in run_each(config, feature_drift, calls) for d in found]


def _slice_metrics(
    column: str, value: str, y: np.ndarray, score: np.ndarray, kind: str, threshold: float
) -> dict[str, float]:
    if kind == "binary":
        return metrics.classification_metrics(y, score, threshold)
    return metrics.regression_metrics(y, score)


slice_metrics: Task[..., dict[str, float]] = task(
    name="slice-metrics", task_run_name="metrics-{column}={value}"
)(_slice_metrics)


def score_report(
    config: EngineConfig,
    y: np.ndarray,
    score: np.ndarray,
    *,
    task: str,
    threshold: float,
    slices: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """`keel.metrics.score_report`, one task per slice value on Dask (same result)."""
    if config.kind != "dask" or not slices:
        return metrics.score_report(y, score, task=task, threshold=threshold, slices=slices)
    report = metrics.score_report(y, score, task=task, threshold=threshold)
    y, score = np.asarray(y), np.asarray(score)
    calls, where = [], []
    for column, values in slices.items():
        # The groups of `keel.metrics.slice_metrics`, in its order, with its names.
        groups = pd.Series(np.asarray(values, dtype=object)).groupby(
            np.asarray(values, dtype=object), dropna=False
        )
        for value, rows in groups.indices.items():
            calls.append(
                {
                    "column": column,
                    "value": str(value),
                    "y": y[rows],
                    "score": score[rows],
                    "kind": task,
                    "threshold": threshold,
                }
            )
            where.append((column, str(value)))
    report["slices"] = {column: {} for column in slices}
    for (column, value), found in zip(where, run_each(config, slice_metrics, calls), strict=True):
        report["slices"][column][value] = found
    return report
