"""`keel models reproduce`: re-create a version from its commit, params and data, and prove it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.train import train_flow
from tests.conftest import REPO, make_project

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
runner = CliRunner()


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True
    )


@pytest.fixture()
def git_project(tmp_path: Path, hotel_sample: pd.DataFrame) -> Path:
    root = make_project(tmp_path / "project", hotel_sample, with_code=True)
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".gitignore").write_text(
        "/.keel/\n/data/interim/\n/data/features/\n/models/\n/reports/\n"
    )
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["gate"]["model_name"] = "hotel-repro"
    params["train"]["nthread"] = 2  # fixed threads: byte-identical hist training
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")
    return root


def test_reproduce_gives_identical_model_bytes(git_project: Path) -> None:
    result = train_flow(root=str(git_project))
    assert result["version"] == 1
    # The working copy moves on after training: reproduce must use the recorded lineage.
    params = yaml.safe_load((git_project / "params.yaml").read_text())
    params["train"]["xgboost"]["max_depth"] = 3
    (git_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = runner.invoke(
        app, ["models", "reproduce", "1", "--params", str(git_project / "params.yaml")]
    )
    assert out.exit_code == 0, out.output
    assert "reproduced hotel-repro v1 from commit" in out.output
    assert "identical model bytes" in out.output


def test_reproduce_a_project_in_an_ignored_folder_of_the_repository(git_project: Path) -> None:
    # The replay's layout (`make demo`): each strategy's project lives in `.keel/replay/<name>`,
    # which git ignores, and its code is the repository's. git refuses to archive from an
    # untracked folder, so the checkout must come from the repository's top level.
    project = git_project / ".keel/replay/keel"
    project.mkdir(parents=True)
    params = yaml.safe_load((git_project / "params.yaml").read_text())
    params["ingest"]["source"] = str(git_project / params["ingest"]["source"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(git_project / "expectations", project / "expectations")
    assert train_flow(root=str(project))["version"] == 1

    out = runner.invoke(app, ["models", "reproduce", "1", "--params", str(project / "params.yaml")])
    assert out.exit_code == 0, out.output
    assert "identical model bytes" in out.output


def test_reproduce_unknown_version_is_a_clear_error(git_project: Path) -> None:
    out = runner.invoke(
        app, ["models", "reproduce", "7", "--params", str(git_project / "params.yaml")]
    )
    assert out.exit_code == 1
    assert "has no version 7" in out.output
