"""XGBoost training, device choice, and saving in UBJSON (never pickle)."""

from __future__ import annotations

import json
import logging
import threading
import warnings
import weakref
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from keel.config import DataConfig, TrainConfig
from keel.features import FeatureSpec, build_features

__all__ = [
    "ModelBundle",
    "TrainResult",
    "booster_params",
    "load_booster",
    "load_bundle",
    "predict",
    "recency_weights",
    "resolve_device",
    "shap_booster",
    "train_model",
]

log = logging.getLogger(__name__)


@cache
def _cuda_usable() -> bool:
    if not xgb.build_info().get("USE_CUDA", False):
        return False
    probe = xgb.DMatrix(np.array([[0.0], [1.0]]), label=np.array([0.0, 1.0]))
    # Without a GPU, XGBoost warns and silently trains on the CPU: read back what it used.
    with warnings.catch_warnings(), xgb.config_context(verbosity=0):
        warnings.simplefilter("ignore")
        try:
            booster = xgb.train({"device": "cuda", "tree_method": "hist"}, probe, 1)
        except xgb.core.XGBoostError:
            return False
    return bool(booster_config(booster)["learner"]["generic_param"]["device"].startswith("cuda"))


def resolve_device(requested: str) -> str:
    """Pick the training device: `auto` uses a usable CUDA GPU, else the CPU, and logs which."""
    if requested == "cpu":
        device = "cpu"
    elif requested == "cuda":
        if not _cuda_usable():
            raise RuntimeError("train.device is 'cuda' but no usable CUDA GPU was found")
        device = "cuda"
    else:
        device = "cuda" if _cuda_usable() else "cpu"
    log.info("training device: %s (requested %s)", device, requested)
    return device


_gpu_copies: weakref.WeakKeyDictionary[xgb.Booster, xgb.Booster] = weakref.WeakKeyDictionary()
_gpu_lock = threading.Lock()


def shap_booster(booster: xgb.Booster, trained_on: str) -> xgb.Booster:
    """The booster that computes SHAP contributions: on the GPU when training used one.

    When the model was trained on a CUDA device (`trained_on`: the device recorded in its
    metadata, as `train_model` read it back from the booster) and a CUDA GPU is usable here,
    this is a copy of `booster` set to `cuda` (XGBoost's GPU TreeSHAP), made once per booster;
    otherwise `booster` itself. A copy, so `booster` stays on the CPU for `inplace_predict` on
    host data and for concurrent callers.
    """
    if not trained_on.startswith("cuda") or not _cuda_usable():
        return booster
    with _gpu_lock:
        copy = _gpu_copies.get(booster)
        if copy is None:
            copy = booster.copy()
            copy.set_param({"device": "cuda"})
            _gpu_copies[booster] = copy
            log.info("SHAP contributions on the GPU (the model was trained on %s)", trained_on)
    return copy


def recency_weights(times: pd.Series, reference: pd.Timestamp, half_life_days: float) -> np.ndarray:
    """Weight each row by 0.5 ** (age in days / half-life), age measured back from `reference`."""
    age = (reference - times).dt.days.clip(lower=0).fillna(0).to_numpy(dtype="float64")
    weights: np.ndarray = np.power(0.5, age / half_life_days)
    return weights


@dataclass(frozen=True)
class TrainResult:
    """A trained booster and how it was made."""

    booster: xgb.Booster
    best_iteration: int
    best_score: float
    rounds: int
    device: str
    params: dict[str, Any]


def _objective(task: str) -> dict[str, Any]:
    if task == "binary":
        return {"objective": "binary:logistic", "eval_metric": ["logloss", "auc"]}
    return {"objective": "reg:squarederror", "eval_metric": ["rmse"]}


def booster_params(data: DataConfig, config: TrainConfig, device: str) -> dict[str, Any]:
    """The XGBoost parameters of a training run (the same on one machine and on Dask)."""
    return {
        "tree_method": "hist",
        **_objective(data.task),
        **config.xgboost,
        "device": device,
        "seed": config.seed,
        "nthread": config.nthread,
    }


def train_model(
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
    """Train with early stopping on a validation slice, then optionally refit on all rows.

    Args:
        fit_x: Rows to fit on while early stopping.
        fit_y: Their labels.
        valid_x: The time-ordered validation slice.
        valid_y: Its labels.
        data: The data section (task type).
        config: The train section.
        fit_weight: Optional row weights for `fit_x`.
        full: With `config.refit_full`, the rows (X, y, weight) of the final refit.

    Returns:
        The final booster and its training summary.
    """
    device = resolve_device(config.device)
    params = booster_params(data, config, device)
    dfit = xgb.QuantileDMatrix(fit_x, fit_y, weight=fit_weight, enable_categorical=True)
    dvalid = xgb.QuantileDMatrix(valid_x, valid_y, ref=dfit, enable_categorical=True)
    booster = xgb.train(
        params,
        dfit,
        num_boost_round=config.num_boost_round,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=config.early_stopping_rounds,
        verbose_eval=False,
    )
    best_iteration = int(booster.best_iteration)
    best_score = float(booster.best_score)
    rounds = best_iteration + 1
    log.info("early stopping: best iteration %d, validation score %.4f", best_iteration, best_score)
    if config.refit_full and full is not None:
        x, y, w = full
        dfull = xgb.QuantileDMatrix(x, y, weight=w, enable_categorical=True)
        booster = xgb.train(params, dfull, num_boost_round=rounds, verbose_eval=False)
    else:
        booster = booster[:rounds]
    return TrainResult(booster, best_iteration, best_score, rounds, device, params)


def predict(booster: xgb.Booster, features: pd.DataFrame) -> np.ndarray:
    """Score a feature matrix built by the model's own spec."""
    booster.set_param({"device": "cpu"})
    return np.asarray(booster.inplace_predict(features), dtype="float64")


def load_booster(path: Path) -> xgb.Booster:
    """Load a UBJSON model file."""
    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster


def booster_config(booster: xgb.Booster) -> dict[str, Any]:
    """The booster's own JSON configuration (for lineage)."""
    config: dict[str, Any] = json.loads(booster.save_config())
    return config


@dataclass(frozen=True)
class ModelBundle:
    """A model is itself plus its transformations: booster, fitted feature spec, metadata."""

    booster: xgb.Booster
    spec: FeatureSpec
    metadata: dict[str, Any]

    def predict(self, records: pd.DataFrame) -> np.ndarray:
        """Score raw records with the model's own feature spec."""
        return predict(self.booster, build_features(records, self.spec))


def load_bundle(directory: Path) -> ModelBundle:
    """Load a model folder written by the train stage (`model.ubj`, `feature_spec.json`,
    `metadata.json`)."""
    return ModelBundle(
        booster=load_booster(directory / "model.ubj"),
        spec=FeatureSpec.from_json((directory / "feature_spec.json").read_text(encoding="utf-8")),
        metadata=json.loads((directory / "metadata.json").read_text(encoding="utf-8")),
    )
