"""The training flow under a real (temporary) Prefect server, with and without DVC."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.train import train_flow
from keel.fingerprint import tree_md5
from keel.layout import STAGES, ProjectPaths
from keel.lineage import lock_hashes
from tests.conftest import make_project

pytestmark = pytest.mark.usefixtures("prefect_harness")
BIN = Path(sys.executable).parent


def _model_cards() -> list[str]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["model-card"]))
        )
    return [str(a.data) for a in artifacts]


def dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout + done.stderr


def test_flow_without_dvc_runs_every_stage_and_publishes_a_card(small_project: Path) -> None:
    result = train_flow(root=str(small_project))
    assert result["ran"] == list(STAGES)
    assert 0.75 < result["metrics"]["roc_auc"] <= 1
    model_md5 = tree_md5(ProjectPaths(small_project).model_dir)
    assert result["hashes"]["train"]["models/model"] == model_md5
    cards = [card for card in _model_cards() if model_md5 in card]
    assert len(cards) == 1
    assert "roc_auc" in cards[0] and "labels_known_by" in cards[0]


@pytest.mark.slow
def test_dvc_decides_what_is_stale_and_records_hashes(
    tmp_path: Path, hotel_sample: pd.DataFrame
) -> None:
    root = make_project(tmp_path / "project", hotel_sample, with_code=True)
    dvc(root, "init", "--no-scm", "-q")
    dvc(root, "config", "core.analytics", "false")

    first = train_flow(root=str(root))
    assert first["ran"] == list(STAGES)
    assert "up to date" in dvc(root, "status")
    # The run recorded DVC's own hashes of data, features and model.
    lock = lock_hashes(root)
    assert first["hashes"] == lock
    assert lock["train"]["models/model"].endswith(".dir")

    second = train_flow(root=str(root))
    assert second["ran"] == []
    # Nothing changed, so the same model is not registered twice.
    assert second["version"] == first["version"] and second["decision"] is None

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["xgboost"]["max_depth"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = train_flow(root=str(root))
    assert third["ran"] == ["train", "evaluate"]
    assert "up to date" in dvc(root, "status")
