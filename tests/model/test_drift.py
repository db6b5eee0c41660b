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
