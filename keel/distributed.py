"""Training and scoring on a Dask cluster, with the engines' own distributed paths.

Training uses XGBoost's `xgboost.dask` (`DaskQuantileDMatrix`, one shard of the rows per worker,
histograms all-reduced between workers), with the same parameters, early stopping and refit
as `keel.model.train_model`. Scoring splits the records into Dask dataframe partitions of
`chunk_rows` rows and runs the one scoring function, `keel.scoring.score_records`, inside
`map_partitions`: the same features, scores and reason codes as on one machine, partitions in
parallel on the workers. Nothing here starts or owns a cluster: callers pass a
`distributed.Client`.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import xgboost as xgb
from xgboost import dask as dxgb

from distributed import Client, Future
from keel.config import DataConfig, TrainConfig
from keel.features import FeatureSpec
from keel.model import ModelBundle, TrainResult, booster_params, resolve_device
from keel.scoring import score_records

__all__ = ["iter_scored_dask", "score_partitions", "train_model_dask", "worker_count"]

log = logging.getLogger(__name__)

_TARGET = "__keel_target__"
_WEIGHT = "__keel_weight__"
_META = pd.DataFrame(
    {
        "score": pd.Series(dtype="float64"),
        "decision": pd.Series(dtype="int64"),
        "reasons": pd.Series(dtype="object"),
    }
)


def worker_count(client: Client) -> int:
    """How many workers the cluster has now (at least 1)."""
    return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))


def _distribute(
    client: Client, x: pd.DataFrame, y: pd.Series, weight: np.ndarray | None
) -> tuple[dd.DataFrame, dd.Series, dd.Series | None]:
    # One frame, so features, labels and weights are cut into the same partitions.
    frame = x.assign(**{_TARGET: y.to_numpy()})
    if weight is not None:
        frame[_WEIGHT] = weight
    # One shard per worker, placed on it: left to the scheduler, two shards can land on one
    # worker, and XGBoost's all-reduce then fails on the worker without data.
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if len(frame) < len(workers):
        raise ValueError(f"{len(frame)} rows cannot be shared by {len(workers)} Dask workers")
    positions = np.array_split(np.arange(len(frame)), len(workers))
    shards = [
        client.scatter(frame.iloc[rows], workers=[worker])  # type: ignore[no-untyped-call]
        for rows, worker in zip(positions, workers, strict=True)
    ]
    data = dd.from_delayed(shards, meta=frame.iloc[:0], verify_meta=False)
    return (
        data[list(x.columns)],
        data[_TARGET],
        data[_WEIGHT] if weight is not None else None,
    )


def _dask_params(data: DataConfig, config: TrainConfig, device: str) -> dict[str, Any]:
    params = booster_params(data, config, device)
    if not config.nthread:
        # 0 means "all cores" on one machine; on Dask each worker uses its own thread count.
        params.pop("nthread")
    return params


def train_model_dask(
    client: Client,
    fit_x: pd.DataFrame,
    fit_y: pd.Series,
    valid_x: pd.DataFrame,
    valid_y: pd.Series,
    *,
    data: DataConfig,
    config: TrainConfig,
    fit_weight: np.ndarray | None = None,
    full: tuple[pd.DataFrame, pd.Series, np.ndarray | None] | None = None,
) -> TrainResult:
    """`keel.model.train_model` on a Dask cluster with `xgboost.dask`.

    The rows are split over the workers (one partition each); each builds its part of a
    `DaskQuantileDMatrix` and XGBoost all-reduces the histograms, so the model is one model
    trained on all rows, with early stopping on the validation slice and an optional refit.

    Args:
        client: A client of the cluster.
        fit_x: Rows to fit on while early stopping.
        fit_y: Their labels.
        valid_x: The time-ordered validation slice.
        valid_y: Its labels.
        data: The data section (task type).
        config: The train section.
        fit_weight: Optional row weights for `fit_x`.
        full: With `config.refit_full`, the rows (X, y, weight) of the final refit.

    Returns:
        The final booster (a plain `xgb.Booster`) and its training summary.
    """
    # XGBoost looks the client up as the current one.
    with client.as_current():
        return _train(client, fit_x, fit_y, valid_x, valid_y, data, config, fit_weight, full)


def _train(
    client: Client,
    fit_x: pd.DataFrame,
    fit_y: pd.Series,
    valid_x: pd.DataFrame,
    valid_y: pd.Series,
    data: DataConfig,
    config: TrainConfig,
    fit_weight: np.ndarray | None,
    full: tuple[pd.DataFrame, pd.Series, np.ndarray | None] | None,
) -> TrainResult:
    # The device is a property of the workers, so the workers decide `auto`.
    device = str(client.submit(resolve_device, config.device, pure=False).result())
    params = _dask_params(data, config, device)
    x, y, w = _distribute(client, fit_x, fit_y, fit_weight)
    vx, vy, _ = _distribute(client, valid_x, valid_y, None)
    dfit = dxgb.DaskQuantileDMatrix(client, x, y, weight=w, enable_categorical=True)
    dvalid = dxgb.DaskQuantileDMatrix(client, vx, vy, ref=dfit, enable_categorical=True)
    output = dxgb.train(
        client,
        params,
        dfit,
        num_boost_round=config.num_boost_round,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=config.early_stopping_rounds,
        verbose_eval=False,
    )
    booster: xgb.Booster = output["booster"]
    best_iteration = int(booster.best_iteration)
    best_score = float(booster.best_score)
    rounds = best_iteration + 1
    log.info(
        "dask early stopping: best iteration %d, validation score %.4f on %d workers",
        best_iteration,
        best_score,
        worker_count(client),
    )
    if config.refit_full and full is not None:
        fx, fy, fw = _distribute(client, *full)
        dfull = dxgb.DaskQuantileDMatrix(client, fx, fy, weight=fw, enable_categorical=True)
        booster = dxgb.train(client, params, dfull, num_boost_round=rounds, verbose_eval=False)[
            "booster"
        ]
    else:
        booster = booster[:rounds]
    return TrainResult(booster, best_iteration, best_score, rounds, device, params)


_bundles: collections.OrderedDict[str, ModelBundle] = collections.OrderedDict()
_bundles_lock = threading.Lock()


def _payload(bundle: ModelBundle) -> dict[str, Any]:
    model = bytes(bundle.booster.save_raw(raw_format="ubj"))
    return {
        "key": hashlib.sha256(model).hexdigest(),
        "model": model,
        "spec": bundle.spec.to_json(),
        "metadata": bundle.metadata,
    }


def _worker_bundle(payload: dict[str, Any]) -> ModelBundle:
    """The bundle on a worker, loaded once per worker process and model."""
    with _bundles_lock:
        bundle = _bundles.get(payload["key"])
        if bundle is None:
            booster = xgb.Booster()
            booster.load_model(bytearray(payload["model"]))
            bundle = ModelBundle(
                booster, FeatureSpec.from_json(payload["spec"]), payload["metadata"]
            )
            _bundles[payload["key"]] = bundle
            while len(_bundles) > 2:
                _bundles.popitem(last=False)
        return bundle


def _score_partition(
    part: pd.DataFrame, payload: dict[str, Any], options: dict[str, Any]
) -> pd.DataFrame:
    if part.empty:
        return _META.copy()
    # One partition is one chunk: the per-chunk scoring function, as on one machine.
    return score_records(_worker_bundle(payload), part, chunk_rows=len(part), **options)


def score_partitions(
    records: dd.DataFrame,
    bundle: ModelBundle,
    *,
    threshold: float,
    reason_codes: int = 3,
    reason_method: str = "shap",
) -> dd.DataFrame:
    """Score a Dask dataframe of raw records, partition by partition.

    Args:
        records: Raw records (the spec's columns), any number of partitions.
        bundle: The model; it travels to each worker once and is loaded once there.
        threshold: Decision threshold on the score.
        reason_codes: How many reasons per record.
        reason_method: `shap` or `approx` (see `keel.scoring.iter_scored`).

    Returns:
        A lazy Dask dataframe with `score`, `decision` and `reasons`, indexed like `records`.
    """
    payload = dask.delayed(_payload(bundle), pure=True)  # type: ignore[attr-defined]
    options = {
        "threshold": threshold,
        "reason_codes": reason_codes,
        "reason_method": reason_method,
    }
    scored: dd.DataFrame = records.map_partitions(  # type: ignore[no-untyped-call]
        _score_partition, payload, options, meta=_META
    )
    return scored


def iter_scored_dask(
    client: Client,
    bundle: ModelBundle,
    records: pd.DataFrame,
    *,
    threshold: float,
    reason_codes: int = 3,
    chunk_rows: int = 50_000,
    reason_method: str = "shap",
) -> Iterator[pd.DataFrame]:
    """`keel.scoring.iter_scored` on a Dask cluster: partitions of `chunk_rows` scored in
    parallel, yielded in order.

    At most two partitions per worker are in flight or waiting to be consumed, so memory stays
    bounded by a few chunks however large the batch.

    Yields:
        Per partition, a frame with `score`, `decision` and `reasons`, indexed like `records`.
    """
    if records.empty:
        return
    needed = [c for c in records.columns if c in bundle.spec.required_columns]
    frame = dd.from_pandas(  # type: ignore[no-untyped-call]
        records[needed], chunksize=chunk_rows, sort=False
    )
    scored = score_partitions(
        frame,
        bundle,
        threshold=threshold,
        reason_codes=reason_codes,
        reason_method=reason_method,
    )
    parts = scored.to_delayed()  # type: ignore[no-untyped-call]
    window = 2 * worker_count(client)
    pending: collections.deque[Future[pd.DataFrame]] = collections.deque()
    submitted = 0
    while submitted < len(parts) or pending:
        while submitted < len(parts) and len(pending) < window:
            pending.append(client.compute(parts[submitted]))  # type: ignore[no-untyped-call]
            submitted += 1
        future = pending.popleft()
        result: pd.DataFrame = future.result()
        future.release()  # type: ignore[no-untyped-call]
        yield result
