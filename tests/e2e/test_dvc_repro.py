"""`dvc repro` as a user runs it: everything, then nothing, then only what a param touches."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import make_project

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def repro(root: Path) -> list[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(BIN / "dvc"), "repro"], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return re.findall(r"Running stage '(\w+)'", done.stdout + done.stderr)


def test_repro_runs_only_stale_stages(tmp_path: Path, hotel_sample: pd.DataFrame) -> None:
    root = make_project(tmp_path / "project", hotel_sample, with_code=True)
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=root, check=True)

    assert repro(root) == ["ingest", "validate", "featurize", "train", "evaluate"]
    assert (root / "dvc.lock").is_file()
    assert repro(root) == []

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["xgboost"]["eta"] = 0.25
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert repro(root) == ["train", "evaluate"]

    params["evaluate"]["threshold"] = 0.4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert repro(root) == ["evaluate"]
