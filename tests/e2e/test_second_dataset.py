"""A second data set through the same flow with only its own params and suite: no code change.

scikit-learn's bundled diabetes data (real, 442 patients): regression, no time column, so the
split is seeded and random.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sklearn.datasets import load_diabetes

from flows.train import train_flow
from keel.layout import ProjectPaths

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/diabetes"
pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_diabetes_regression_through_the_training_flow(tmp_path: Path) -> None:
    root = tmp_path / "diabetes"
    shutil.copytree(FIXTURE, root)
    (root / "data/raw").mkdir(parents=True)
    load_diabetes(as_frame=True).frame.to_csv(root / "data/raw/diabetes.csv", index=False)

    result = train_flow(root=str(root))

    assert result["ran"] == ["ingest", "validate", "featurize", "train", "evaluate"]
    metrics = result["metrics"]
    assert set(metrics) == {"rows", "rmse", "mae", "r2"}
    assert 60 <= metrics["rows"] <= 120  # ~20 % of 442
    assert metrics["r2"] > 0.2  # a real fit, not the mean (published models reach ~0.4-0.5)
    metadata = json.loads((ProjectPaths(root).model_dir / "metadata.json").read_text())
    assert metadata["task"] == "regression"
    assert metadata["params"]["objective"] == "reg:squarederror"
    assert metadata["training_window"] == {}
