"""keel.metrics: metrics, calibration and slices on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from keel.metrics import (
    calibration_table,
    classification_metrics,
    regression_metrics,
    score_report,
    slice_metrics,
)

CLASSIFICATION_KEYS = {
    "rows",
    "positive_rate",
    "predicted_positive_rate",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "precision",
    "recall",
    "accuracy",
}
REGRESSION_KEYS = {"rows", "rmse", "mae", "r2"}


def test_perfect_scores() -> None:
    y = np.array([0, 0, 1, 1])
    m = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]), 0.5)
    assert set(m) == CLASSIFICATION_KEYS
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and m["accuracy"] == 1.0
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert m["log_loss"] == pytest.approx(-(2 * math.log(0.9) + 2 * math.log(0.8)) / 4)


def test_inverted_and_constant_scores() -> None:
    y = np.array([0, 0, 1, 1])
    assert classification_metrics(y, np.array([0.9, 0.8, 0.2, 0.1]), 0.5)["roc_auc"] == 0.0
    constant = classification_metrics(y, np.full(4, 0.5), 0.5)
    assert constant["roc_auc"] == 0.5
    assert constant["brier"] == pytest.approx(0.25)
    assert constant["log_loss"] == pytest.approx(math.log(2))


def test_random_scores_have_auc_near_half() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20_000)
    m = classification_metrics(y, rng.random(20_000), 0.5)
    assert m["roc_auc"] == pytest.approx(0.5, abs=0.02)
    assert m["pr_auc"] == pytest.approx(y.mean(), abs=0.02)


def test_hard_zero_and_one_scores_are_clipped_not_infinite() -> None:
    m = classification_metrics(np.array([0, 1]), np.array([1.0, 0.0]), 0.5)
    assert math.isfinite(m["log_loss"]) and m["log_loss"] > 30


def test_threshold_metrics_by_hand() -> None:
    # score:  .9  .8  .7  .6  .4  .3  .2  .1   threshold .5 -> predicted 1 1 1 1 0 0 0 0
    # label:   1   0   1   0   1   0   0   0   TP=2 FP=2 FN=1 TN=3
    y = np.array([1, 0, 1, 0, 1, 0, 0, 0])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    m = classification_metrics(y, score, 0.5)
    assert m["rows"] == 8.0
    assert m["positive_rate"] == pytest.approx(3 / 8)
    assert m["predicted_positive_rate"] == pytest.approx(4 / 8)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(5 / 8)
    # positives outrank 12 of the 15 (positive, negative) pairs
    assert m["roc_auc"] == pytest.approx(12 / 15)
    # average precision: (1/1 + 2/3 + 3/5) / 3
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    expected_brier = np.mean((score - y) ** 2)
    assert m["brier"] == pytest.approx(expected_brier)


def test_threshold_is_inclusive() -> None:
    y = np.array([0, 1])
    at = classification_metrics(y, np.array([0.2, 0.7]), 0.7)
    assert at["recall"] == 1.0 and at["predicted_positive_rate"] == 0.5
    above = classification_metrics(y, np.array([0.2, 0.7]), 0.71)
    assert above["recall"] == 0.0 and above["precision"] == 0.0  # zero_division=0


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_nan_auc_not_an_error(label: int) -> None:
    m = classification_metrics(np.array([label] * 3), np.array([0.2, 0.6, 0.9]), 0.5)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert m["positive_rate"] == float(label)
    assert m["accuracy"] == pytest.approx(2 / 3 if label else 1 / 3)
    assert math.isfinite(m["log_loss"]) and math.isfinite(m["brier"])


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert set(m) == REGRESSION_KEYS
    assert m["rows"] == 3.0
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert m["r2"] == pytest.approx(1 - 4 / 2)  # SSE 4, SST 2


def test_regression_perfect_and_single_row() -> None:
    y = np.array([3.0, -1.0, 2.5])
    perfect = regression_metrics(y, y)
    assert perfect == {"rows": 3.0, "rmse": 0.0, "mae": 0.0, "r2": 1.0}
    one = regression_metrics(np.array([2.0]), np.array([4.0]))
    assert one["rmse"] == 2.0 and one["mae"] == 2.0 and math.isnan(one["r2"])


def test_calibration_table_by_hand() -> None:
    y = np.array([0, 1, 1, 0, 1])
    score = np.array([0.0, 0.05, 0.55, 0.5, 1.0])
    table = calibration_table(y, score, 4)
    assert list(table.columns) == ["bin_low", "predicted", "observed", "count"]
    assert list(table["bin_low"]) == [0.0, 0.25, 0.5, 0.75]
    assert list(table["count"]) == [2, 1, 1, 1]  # 0.5 falls in (0.25, 0.5]; 0.0 is included
    assert list(table["predicted"]) == pytest.approx([0.025, 0.5, 0.55, 1.0])
    assert list(table["observed"]) == [0.5, 0.0, 1.0, 1.0]


def test_calibration_table_drops_empty_bins() -> None:
    table = calibration_table(np.array([0, 1, 1]), np.array([0.05, 0.91, 0.99]), 10)
    assert list(table["bin_low"]) == [0.0, 0.9]
    assert list(table["count"]) == [1, 2]


def test_calibration_table_counts_every_row() -> None:
    rng = np.random.default_rng(0)
    score = rng.random(500)
    y = (rng.random(500) < score).astype(int)
    table = calibration_table(y, score, 10)
    assert table["count"].sum() == 500 and len(table) == 10
    assert list(table["bin_low"]) == pytest.approx([i / 10 for i in range(10)])
    # well calibrated scores: observed tracks predicted
    assert np.abs(table["observed"] - table["predicted"]).max() < 0.2
    assert (
        (table["predicted"] >= table["bin_low"]) & (table["predicted"] <= table["bin_low"] + 0.1)
    ).all()


def test_slice_metrics_keys_and_rows() -> None:
    frame = pd.DataFrame(
        {
            "hotel": ["City", "City", "Resort", "Resort", None],
            "y": [0, 1, 1, 0, 1],
            "s": [0.2, 0.8, 0.3, 0.4, 0.9],
        }
    )
    out = slice_metrics(frame, "hotel", "y", "s", task="binary", threshold=0.5)
    assert set(out) == {"City", "Resort", "nan"}  # missing slice values are kept
    assert set(out["City"]) == CLASSIFICATION_KEYS
    assert out["City"]["rows"] == 2.0 and out["City"]["roc_auc"] == 1.0
    assert out["Resort"]["roc_auc"] == 0.0
    assert math.isnan(out["nan"]["roc_auc"])


def test_slice_metrics_regression() -> None:
    frame = pd.DataFrame({"g": ["a", "a", "b"], "y": [1.0, 3.0, 2.0], "s": [1.0, 2.0, 2.0]})
    out = slice_metrics(frame, "g", "y", "s", task="regression", threshold=0.5)
    assert set(out) == {"a", "b"}
    assert set(out["a"]) == REGRESSION_KEYS
    assert out["a"]["mae"] == 0.5 and out["b"]["mae"] == 0.0


def test_score_report_overall_and_slices() -> None:
    y = np.array([0, 1, 0, 1])
    score = np.array([0.2, 0.8, 0.3, 0.7])
    report = score_report(
        y,
        score,
        task="binary",
        threshold=0.5,
        slices={"hotel": np.array(["A", "A", "B", "B"]), "month": np.array([1, 2, 1, 2])},
    )
    assert set(report) == {"holdout", "slices"}
    assert report["holdout"] == classification_metrics(y, score, 0.5)
    assert set(report["slices"]) == {"hotel", "month"}
    assert set(report["slices"]["hotel"]) == {"A", "B"}
    assert set(report["slices"]["month"]) == {"1", "2"}  # slice values become text keys
    assert report["slices"]["hotel"]["A"]["rows"] == 2.0
    assert math.isnan(report["slices"]["month"]["1"]["roc_auc"])  # only negatives


def test_score_report_regression_without_slices() -> None:
    report = score_report(
        np.array([1.0, 2.0]), np.array([1.0, 4.0]), task="regression", threshold=0.5
    )
    assert report["slices"] == {}
    assert report["holdout"]["mae"] == 1.0
