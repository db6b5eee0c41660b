"""`engine: dask`: xgboost.dask training, Dask scoring partitions and DaskTaskRunner fan-out.

Everything runs on a `LocalCluster` of two worker processes and is compared with the local
engine on the same data: the holdout AUC within 0.005, the same predictions (count, keys,
scores and reasons), the same drift and slice metrics.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from sqlalchemy import create_engine, text

from flows.production import score_flow
from flows.train import train_flow
from keel import drift, metrics
from keel.config import EngineConfig, Params, load_params
from keel.history import with_history
from keel.model import load_bundle
from keel.scoring import score_records
from tasks import engine, stages
from tasks.io import read_json
from tasks.production import load_records
from tests.conftest import make_project
from tests.scale.conftest import use_engine

pytestmark = pytest.mark.slow
DASK = EngineConfig(kind="dask")
LOCAL = EngineConfig()


def _with_engine(params: Params, kind: str) -> Params:
    return params.model_copy(update={"engine": params.engine.model_copy(update={"kind": kind})})


@pytest.fixture(scope="module")
def featurized(tmp_path_factory: pytest.TempPathFactory, hotel_sample: pd.DataFrame) -> Path:
    root = make_project(tmp_path_factory.mktemp("dask") / "project", hotel_sample)
    params = load_params(root / "params.yaml")
    for stage in ("ingest", "validate", "featurize"):
        getattr(stages, stage).fn(root, params)
    return root


def _train_and_evaluate(root: Path, params: Params) -> tuple[dict[str, object], Path]:
    stages.train.fn(root, params)
    report = stages.evaluate.fn(root, params)
    kept = root.parent / f"model-{params.engine.kind}"
    shutil.copytree(root / "models/model", kept, dirs_exist_ok=True)
    return report, kept


def test_dask_training_and_scoring_match_the_local_engine(featurized: Path, on_dask: str) -> None:
    params = load_params(featurized / "params.yaml")
    local, _ = _train_and_evaluate(featurized, _with_engine(params, "local"))
    dask, dask_model = _train_and_evaluate(featurized, _with_engine(params, "dask"))

    assert read_json(dask_model / "metadata.json")["engine"] == "dask"
    local_auc, dask_auc = local["holdout"]["roc_auc"], dask["holdout"]["roc_auc"]  # type: ignore[index]
    assert local_auc > 0.85
    assert abs(dask_auc - local_auc) <= 0.005, (local_auc, dask_auc)
    assert dask["holdout"]["rows"] == local["holdout"]["rows"]  # type: ignore[index]
    # Per-slice metrics ran as one task per hotel on the cluster.
    assert set(dask["slices"]["hotel"]) == {"City Hotel", "Resort Hotel"}  # type: ignore[index]

    # The same model scored in Dask partitions gives the same predictions as one process.
    bundle = load_bundle(dask_model)
    raw = load_records(featurized, params)
    # Each record with the outcome history known when it was made, as the model learnt it.
    records = with_history(raw, raw, bundle.spec.history, params.data.target)
    reference = score_records(bundle, records, threshold=0.5, chunk_rows=1000)
    parts = list(engine.iter_scored(DASK, bundle, records, threshold=0.5, chunk_rows=1000))
    assert len(parts) == -(-len(records) // 1000) > 2
    scored = pd.concat(parts)
    assert len(scored) == len(reference) == len(records)
    assert scored.index.equals(reference.index)
    np.testing.assert_array_equal(scored["score"].to_numpy(), reference["score"].to_numpy())
    assert scored["decision"].tolist() == reference["decision"].tolist()
    assert scored["reasons"].tolist() == reference["reasons"].tolist()


def test_fan_out_tasks_run_on_the_dask_task_runner(on_dask: str, prefect_harness: None) -> None:
    rng = np.random.default_rng(3)
    train = pd.DataFrame(
        {
            "lead_time": rng.gamma(2, 50, 2000),
            "hotel": pd.Categorical(rng.choice(["City", "Resort"], 2000)),
        }
    )
    reference = drift.build_reference(train, rng.random(2000))
    window = train.assign(lead_time=train["lead_time"] * 1.5)
    scores, labels = rng.random(2000), rng.integers(0, 2, 2000)
    slices = {"hotel": train["hotel"].astype(str).to_numpy()}

    @flow(name="fan-out-check")
    def fan_out() -> tuple[list[drift.FeatureDrift], dict[str, object], str]:
        from prefect.runtime import flow_run

        found = engine.drift_report(DASK, reference, window, scores, 0.1, ks_threshold=0.05)
        report = engine.score_report(
            DASK, labels, scores, task="binary", threshold=0.5, slices=slices
        )
        return found, report, str(flow_run.get_id())

    found, report, run_id = fan_out()
    assert found == drift.drift_report(reference, window, scores, 0.1, ks_threshold=0.05)
    assert [d.feature for d in found] == ["lead_time", "lead_time", "hotel", "__score__"]
    assert report == metrics.score_report(
        labels, scores, task="binary", threshold=0.5, slices=slices
    )
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_task_runs() if str(r.flow_run_id) == run_id]
    names = sorted(r.name for r in runs)
    assert names == [
        "drift-__score__",
        "drift-hotel",
        "drift-lead_time",
        "metrics-hotel=City",
        "metrics-hotel=Resort",
    ]
    assert all(r.state_name == "Completed" for r in runs)


def _predictions(root: Path) -> pd.DataFrame:
    db = create_engine(f"sqlite:///{root / '.keel/keel.db'}")
    with db.connect() as conn:
        frame = pd.read_sql(
            text("SELECT entity_key, score, decision, reasons FROM predictions ORDER BY 1"), conn
        )
    db.dispose()
    return frame


def test_score_flow_on_dask_writes_the_same_predictions(
    tmp_path: Path, hotel_sample: pd.DataFrame, on_dask: str, prefect_harness: None
) -> None:
    trained = make_project(tmp_path / "trained", hotel_sample)
    assert train_flow(root=str(trained))["decision"]["outcome"] == "promote"
    as_of = dt.datetime(2016, 8, 1, tzinfo=dt.UTC)
    results = {}
    for kind in ("local", "dask"):
        root = tmp_path / kind
        shutil.copytree(trained, root)
        use_engine(root, kind)
        results[kind] = score_flow(root=str(root), as_of=as_of)
    assert results["dask"]["written"] == results["local"]["written"] > 50
    local, dask = _predictions(tmp_path / "local"), _predictions(tmp_path / "dask")
    pd.testing.assert_frame_equal(dask, local)
