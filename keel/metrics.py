"""Evaluation metrics for binary classification and regression."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

__all__ = [
    "calibration_table",
    "classification_metrics",
    "regression_metrics",
    "score_report",
    "slice_metrics",
]


def classification_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier score and threshold metrics.

    Args:
        y: Labels in {0, 1}.
        score: Predicted probabilities.
        threshold: Decision threshold.

    Returns:
        Named metrics; AUCs are NaN when only one class is present.
    """
    y = np.asarray(y, dtype="int64")
    score = np.clip(np.asarray(score, dtype="float64"), 1e-15, 1 - 1e-15)
    decision = (score >= threshold).astype("int64")
    both = len(np.unique(y)) == 2
    return {
        "rows": float(len(y)),
        "positive_rate": float(y.mean()) if len(y) else math.nan,
        "predicted_positive_rate": float(decision.mean()) if len(y) else math.nan,
        "roc_auc": float(skm.roc_auc_score(y, score)) if both else math.nan,
        "pr_auc": float(skm.average_precision_score(y, score)) if both else math.nan,
        "log_loss": float(skm.log_loss(y, score, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, score)),
        "precision": float(skm.precision_score(y, decision, zero_division=0)),
        "recall": float(skm.recall_score(y, decision, zero_division=0)),
        "accuracy": float(skm.accuracy_score(y, decision)),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² of a regression."""
    y = np.asarray(y, dtype="float64")
    pred = np.asarray(pred, dtype="float64")
    return {
        "rows": float(len(y)),
        "rmse": float(math.sqrt(skm.mean_squared_error(y, pred))),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)) if len(y) > 1 else math.nan,
    }


def calibration_table(y: np.ndarray, score: np.ndarray, bins: int) -> pd.DataFrame:
    """Observed vs predicted positive rate in equal-width score bins (empty bins dropped)."""
    frame = pd.DataFrame({"y": np.asarray(y, dtype="float64"), "score": score})
    edges = np.linspace(0.0, 1.0, bins + 1)
    frame["bin"] = pd.cut(frame["score"], edges, include_lowest=True, labels=False)
    table = (
        frame.groupby("bin", observed=True)
        .agg(predicted=("score", "mean"), observed=("y", "mean"), count=("y", "size"))
        .reset_index()
    )
    table["bin_low"] = np.round(edges[table["bin"].to_numpy(dtype="int64")], 6)
    return table[["bin_low", "predicted", "observed", "count"]]


def slice_metrics(
    frame: pd.DataFrame, by: str, y: str, score: str, *, task: str, threshold: float
) -> dict[str, dict[str, float]]:
    """Metrics per value of a slice column (for the hotel data: per hotel)."""
    out: dict[str, dict[str, float]] = {}
    for value, part in frame.groupby(by, observed=True, dropna=False):
        labels, scores = part[y].to_numpy(), part[score].to_numpy()
        out[str(value)] = (
            classification_metrics(labels, scores, threshold)
            if task == "binary"
            else regression_metrics(labels, scores)
        )
    return out


def score_report(
    y: np.ndarray,
    score: np.ndarray,
    *,
    task: str,
    threshold: float,
    slices: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Overall metrics and metrics per slice column, as `metrics.json` holds them.

    Args:
        y: Labels.
        score: Predictions.
        task: `binary` or `regression`.
        threshold: Decision threshold (binary).
        slices: Slice column name -> the slice value of every row.

    Returns:
        `{"holdout": {...}, "slices": {column: {value: {...}}}}`.
    """
    frame = pd.DataFrame({"y": y, "score": score})
    overall = (
        classification_metrics(y, score, threshold)
        if task == "binary"
        else regression_metrics(y, score)
    )
    by_column = {}
    for column, values in (slices or {}).items():
        frame["slice"] = np.asarray(values, dtype=object)
        by_column[column] = slice_metrics(
            frame, "slice", "y", "score", task=task, threshold=threshold
        )
    return {"holdout": overall, "slices": by_column}
