"""The stage tasks on a small real-data project, called through `.fn` with `tmp_path`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from keel.config import load_params
from keel.features import FeatureSpec
from keel.fingerprint import file_md5
from keel.layout import ProjectPaths
from keel.table import LABEL_TIME, ORDER_TIME
from tasks import stages


def run_all(root: Path) -> dict[str, dict[str, object]]:
    params = load_params(root / "params.yaml")
    return {
        name: getattr(stages, name).fn(root, params)
        for name in ("ingest", "validate", "featurize", "train", "evaluate")
    }


def test_pipeline_writes_every_output(small_project: Path) -> None:
    summaries = run_all(small_project)
    paths = ProjectPaths(small_project)
    assert summaries["validate"]["success"] is True
    for path in (paths.table, paths.validation_result, paths.feature_spec, paths.metrics):
        assert path.is_file(), path
    assert (paths.validation_dir / "data_docs" / "index.html").is_file()
    assert {p.name for p in paths.model_dir.iterdir()} == {
        "model.ubj",
        "feature_spec.json",
        "metadata.json",
        "reference.json",
    }
    # The fitted spec travels with the model, identical to what featurize fitted.
    assert FeatureSpec.from_json(
        (paths.model_dir / "feature_spec.json").read_text()
    ) == FeatureSpec.from_json(paths.feature_spec.read_text())
    metadata = json.loads((paths.model_dir / "metadata.json").read_text())
    source = small_project / "data/raw/hotel_bookings.csv.gz"
    assert metadata["data_fingerprint"]["source_md5"] == file_md5(source)
    assert metadata["device"] in {"cpu", "cuda"}
    assert metadata["params"]["seed"] == 42
    assert metadata["training_window"]["labels_known_by"] == "2016-07-01"
    assert set(metadata["libraries"]) >= {"xgboost", "pandas", "python"}
    metrics = json.loads(paths.metrics.read_text())
    assert 0.75 < metrics["holdout"]["roc_auc"] <= 1.0
    assert set(metrics["slices"]["hotel"]) == {"City Hotel", "Resort Hotel"}
    calibration = pd.read_csv(paths.plots_dir / "calibration.csv")
    assert calibration["count"].sum() == metrics["holdout"]["rows"]
    importance = pd.read_csv(paths.plots_dir / "importance.csv")
    assert importance["total_gain"].iloc[0] > 0


def test_no_leakage_reaches_the_training_matrix(small_project: Path) -> None:
    """Fails if a leakage column or a label unknown at the cutoff reaches training."""
    params = load_params(small_project / "params.yaml")
    for name in ("ingest", "validate", "featurize"):
        getattr(stages, name).fn(small_project, params)
    paths = ProjectPaths(small_project)
    spec = FeatureSpec.from_json(paths.feature_spec.read_text())
    leaking = {*params.featurize.exclude, params.data.target}
    assert not leaking & set(spec.order)
    assert not leaking & set(spec.required_columns)
    split = params.featurize.split
    train = pd.read_parquet(paths.features("train"))
    fit = pd.read_parquet(paths.features("fit"))
    holdout = pd.read_parquet(paths.features("holdout"))
    assert not leaking & set(train.columns)
    assert train[LABEL_TIME].max() <= pd.Timestamp(split.cutoff)
    assert train[ORDER_TIME].max() < pd.Timestamp(split.cutoff)
    assert fit[LABEL_TIME].max() <= pd.Timestamp(split.validation_start)
    assert holdout[ORDER_TIME].min() >= pd.Timestamp(split.cutoff)
    assert not set(train["_key"]) & set(holdout["_key"])


def test_featurize_refuses_unvalidated_data(small_project: Path) -> None:
    params = load_params(small_project / "params.yaml")
    stages.ingest.fn(small_project, params)
    with pytest.raises(stages.StageError, match="run the 'validate' stage first"):
        stages.featurize.fn(small_project, params)
    stages.validate.fn(small_project, params)
    # The table changes after validation: featurize must notice.
    table = ProjectPaths(small_project).table
    pd.read_parquet(table).head(100).to_parquet(table)
    with pytest.raises(stages.StageError, match="changed after it was validated"):
        stages.featurize.fn(small_project, params)


def test_train_needs_features(small_project: Path) -> None:
    params = load_params(small_project / "params.yaml")
    with pytest.raises(stages.StageError, match="run the 'featurize' stage first"):
        stages.train.fn(small_project, params)


def test_training_is_deterministic(small_project: Path) -> None:
    run_all(small_project)
    paths = ProjectPaths(small_project)
    first = file_md5(paths.model_dir / "model.ubj")
    stages.train.fn(small_project, load_params(small_project / "params.yaml"))
    assert file_md5(paths.model_dir / "model.ubj") == first
