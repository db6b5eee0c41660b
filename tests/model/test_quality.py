"""Behavioural checks of the model trained on the full real data with the shipped params."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keel.config import load_params
from keel.features import FeatureSpec, build_features
from keel.history import with_history
from keel.layout import ProjectPaths
from keel.model import load_booster, predict
from keel.table import add_times
from tasks import stages
from tests.conftest import make_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_project(tmp_path_factory: pytest.TempPathFactory, hotel_frame: pd.DataFrame) -> Path:
    root = make_project(tmp_path_factory.mktemp("full") / "project", hotel_frame, fast=False)
    params = load_params(root / "params.yaml")
    for name in ("ingest", "validate", "featurize", "train", "evaluate"):
        getattr(stages, name).fn(root, params)
    return root


@pytest.fixture(scope="module")
def pool(full_project: Path, hotel_frame: pd.DataFrame) -> pd.DataFrame:
    """The bookings whose known outcomes are the outcome history of the scored ones."""
    return add_times(hotel_frame, load_params(full_project / "params.yaml").data)


def _score(root: Path, frame: pd.DataFrame, pool: pd.DataFrame) -> np.ndarray:
    model_dir = ProjectPaths(root).model_dir
    params = load_params(root / "params.yaml")
    spec = FeatureSpec.from_json((model_dir / "feature_spec.json").read_text())
    rows = with_history(add_times(frame, params.data), pool, spec.history, params.data.target)
    return predict(load_booster(model_dir / "model.ubj"), build_features(rows, spec))


def test_holdout_auc_beats_the_reference(full_project: Path) -> None:
    """Acceptance: plain XGBoost reaches 0.841 on this split; Keel must reach 0.85."""
    metrics = json.loads(ProjectPaths(full_project).metrics.read_text())
    assert metrics["holdout"]["rows"] == 9635
    assert metrics["holdout"]["roc_auc"] >= 0.85
    for hotel, values in metrics["slices"]["hotel"].items():
        assert values["roc_auc"] >= 0.8, hotel
    # Calibrated enough to be usable: Brier well below the base-rate Brier (~0.226).
    assert metrics["holdout"]["brier"] < 0.16


def test_scores_do_not_depend_on_ignored_columns(
    full_project: Path, hotel_frame: pd.DataFrame, pool: pd.DataFrame
) -> None:
    """Invariance: leakage columns and row order never change a booking's score."""
    rows = hotel_frame.sample(500, random_state=1)
    base = _score(full_project, rows, pool)
    scrambled = rows.copy()
    scrambled["reservation_status"] = "Check-Out"
    scrambled["assigned_room_type"] = "A"
    scrambled["booking_changes"] = 0
    np.testing.assert_allclose(_score(full_project, scrambled, pool), base)
    np.testing.assert_allclose(_score(full_project, rows.iloc[::-1], pool)[::-1], base)


def test_non_refundable_deposits_raise_the_score(
    full_project: Path, hotel_frame: pd.DataFrame, pool: pd.DataFrame
) -> None:
    """Direction: in this data non-refundable deposits cancel far more often (known effect)."""
    rows = hotel_frame.sample(2000, random_state=2)
    refundable = _score(full_project, rows.assign(deposit_type="No Deposit"), pool)
    non_refund = _score(full_project, rows.assign(deposit_type="Non Refund"), pool)
    assert non_refund.mean() > refundable.mean() + 0.1


def test_unknown_categories_and_missing_values_score(
    full_project: Path, hotel_frame: pd.DataFrame, pool: pd.DataFrame
) -> None:
    rows = hotel_frame.head(50).copy()
    rows["country"] = "ATLANTIS"
    rows["adr"] = np.nan
    rows["meal"] = None
    scores = _score(full_project, rows, pool)
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()


def test_a_booking_never_sees_its_own_outcome(
    full_project: Path, hotel_frame: pd.DataFrame, pool: pd.DataFrame
) -> None:
    """Leakage: the outcome history of a booking holds only outcomes known before it was made,
    so flipping the booking's own label in the history pool never changes its score."""
    rows = hotel_frame.sample(40, random_state=3)
    for index in rows.index:
        own = rows.loc[[index]]
        flipped = pool.copy()
        flipped.loc[index, "is_canceled"] = 1 - flipped.loc[index, "is_canceled"]
        np.testing.assert_allclose(
            _score(full_project, own, flipped), _score(full_project, own, pool)
        )
