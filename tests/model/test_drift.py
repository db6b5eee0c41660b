"""Drift on real bookings: a shifted feature is flagged, and only that one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keel.config import load_params
from keel.drift import build_reference, compute_psi, drift_report
from keel.features import build_features, fit_feature_spec
from keel.history import HistorySettings, add_history
from keel.table import add_times
from tests.conftest import REPO


@pytest.fixture(scope="module")
def reference_and_pool(hotel_frame: pd.DataFrame) -> tuple[dict[str, object], pd.DataFrame]:
    params = load_params(REPO / "params.yaml")
    rng = np.random.default_rng(0)
    history = params.featurize.history
    frame = add_times(hotel_frame, params.data)
    frame = add_history(
        frame,
        frame,
        settings=HistorySettings(tuple(history.columns), history.window_days, history.prior),
        target=params.data.target,
    )
    shuffled = frame.sample(frac=1.0, random_state=0)
    train, pool = shuffled.iloc[:60000], shuffled.iloc[60000:]
    spec = fit_feature_spec(train, params.featurize)
    scores = rng.random(len(train))
    return build_reference(build_features(train, spec), scores, 10), (pool, spec)  # type: ignore[return-value]


def test_an_unshifted_batch_flags_nothing(reference_and_pool) -> None:  # type: ignore[no-untyped-def]
    reference, (pool, spec) = reference_and_pool
    batch = pool.sample(2000, random_state=1)
    report = drift_report(
        reference, build_features(batch, spec), np.random.default_rng(1).random(2000), 0.25
    )
    assert [d.feature for d in report if d.drifted] == []


def test_a_shifted_feature_is_flagged_alone(reference_and_pool) -> None:  # type: ignore[no-untyped-def]
    reference, (pool, spec) = reference_and_pool
    batch = pool.sample(2000, random_state=2).copy()
    batch["lead_time"] = batch["lead_time"] + 150
    report = drift_report(
        reference, build_features(batch, spec), np.random.default_rng(2).random(2000), 0.25
    )
    assert [d.feature for d in report if d.drifted] == ["lead_time"]
    shifted = next(d for d in report if d.feature == "lead_time")
    assert shifted.value > 1.0


def test_unseen_categories_have_their_own_bucket() -> None:
    ref = build_reference(
        pd.DataFrame({"c": pd.Categorical(["a"] * 50 + ["b"] * 50)}), np.zeros(100), 4
    )
    entry = ref["features"]["c"]  # type: ignore[index]
    assert compute_psi(entry, pd.Series(["a"] * 50 + ["b"] * 50)) < 0.01
    assert compute_psi(entry, pd.Series(["zz"] * 100)) > 5  # all mass in the unseen bucket
    assert compute_psi(entry, pd.Series([None] * 100)) > 5  # all mass in the missing bucket


def test_ks_and_chi2_where_configured(reference_and_pool) -> None:  # type: ignore[no-untyped-def]
    reference, (pool, spec) = reference_and_pool
    batch = pool.sample(2000, random_state=3).copy()
    scores = np.random.default_rng(3).random(2000)
    calm = drift_report(
        reference, build_features(batch, spec), scores, 0.25, ks_threshold=0.1, chi2_alpha=1e-6
    )
    assert {d.statistic for d in calm} == {"psi", "ks", "chi2"}
    assert [d.feature for d in calm if d.drifted] == []
    batch["lead_time"] = batch["lead_time"] * 2
    batch["deposit_type"] = "Non Refund"
    moved = drift_report(
        reference, build_features(batch, spec), scores, 10.0, ks_threshold=0.1, chi2_alpha=1e-6
    )
    flagged = {(d.feature, d.statistic) for d in moved if d.drifted}
    assert flagged == {("lead_time", "ks"), ("deposit_type", "chi2")}


@pytest.mark.parametrize("dtype", ["float64", "Float64", "object"])
def test_numeric_bins_count_every_value_once(dtype: str) -> None:
    """Bin shares against a count by hand: values on an edge go up, the top bin keeps its
    values (infinity included) and missing values have their own share."""
    values = np.array([0.0, 1.0, 1.0, 2.0, 3.0, 5.0, np.inf, -np.inf, np.nan, np.nan, 7.0, 2.0])
    reference = build_reference(pd.DataFrame({"x": np.arange(12.0)}), np.zeros(12), 4)
    entry = reference["features"]["x"]
    edges = np.asarray(entry["edges"])
    column = pd.Series(values).astype(dtype)
    if dtype == "Float64":
        column[np.isnan(values)] = pd.NA
    by_hand = np.zeros(len(edges) + 2)
    for value in values:
        by_hand[-1 if np.isnan(value) else int((edges <= value).sum())] += 1
    same = {**entry, "proportions": list(by_hand / by_hand.sum())}
    assert compute_psi(same, column) == pytest.approx(0.0, abs=1e-12)
    shifted = {**entry, "proportions": list(np.roll(by_hand, 1) / by_hand.sum())}
    assert compute_psi(shifted, column) > 0.5
