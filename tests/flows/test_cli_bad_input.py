"""Bad input through the `keel` CLI: a clear message, a non-zero exit, earlier outputs intact."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from keel.fingerprint import tree_md5
from keel.layout import ProjectPaths
from tests.conftest import make_project

STAGES = ("ingest", "validate", "featurize", "train", "evaluate")
runner = CliRunner()


def keel(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory: pytest.TempPathFactory, hotel_sample: pd.DataFrame) -> Path:
    root = make_project(tmp_path_factory.mktemp("good") / "project", hotel_sample)
    for stage in STAGES:
        code, output = keel("stage", stage, "--params", str(root / "params.yaml"))
        assert code == 0, output
    return root


def _frame_writer(
    edit: Callable[[pd.DataFrame], pd.DataFrame],
) -> Callable[[Path, pd.DataFrame], None]:
    def write(path: Path, good: pd.DataFrame) -> None:
        edit(good.copy()).to_csv(path, index=False)

    return write


def _raw_bytes(data: bytes) -> Callable[[Path, pd.DataFrame], None]:
    def write(path: Path, good: pd.DataFrame) -> None:
        path.write_bytes(data)

    return write


def _set(
    column: str, value: object, rows: slice = slice(0, 3)
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.iloc[rows, frame.columns.get_loc(column)] = value
        return frame

    return edit


CASES = {
    # case: (how the bad source is written, words the error must contain)
    "missing column": (_frame_writer(lambda f: f.drop(columns=["adr"])), ["adr"]),
    "wrong dtype": (_frame_writer(_set("lead_time", "soon")), ["lead_time"]),
    "empty file": (_raw_bytes(b""), ["empty"]),
    "not a csv": (
        _raw_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00" * 50),
        ["cannot be read as a table"],
    ),
    "target outside {0,1}": (_frame_writer(_set("is_canceled", 2)), ["is_canceled"]),
    "unknown category": (_frame_writer(_set("hotel", "Motel")), ["hotel", "Motel"]),
    "NaN in numeric": (_frame_writer(_set("adults", np.nan)), ["adults"]),
    "inf in numeric": (_frame_writer(_set("adr", np.inf)), ["adr"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_and_changes_nothing(
    case: str, trained_project: Path, tmp_path: Path, hotel_sample: pd.DataFrame
) -> None:
    root = tmp_path / "project"
    shutil.copytree(trained_project, root)
    paths = ProjectPaths(root)
    outputs_before = (paths.table, paths.features_dir, paths.model_dir, paths.metrics)
    before = {p: tree_md5(p) for p in outputs_before}
    write, words = CASES[case]
    write(root / "data/raw/hotel_bookings.csv.gz", hotel_sample)

    outputs = []
    failed_at = None
    for stage in STAGES:
        code, output = keel("stage", stage, "--params", str(root / "params.yaml"))
        outputs.append(output)
        if code != 0:
            failed_at = stage
            break
    assert failed_at in {"ingest", "validate"}, f"{case}: bad data got past validation"
    # Prefect's console handler may add noise around it; the error line is what users read.
    message = outputs[-1][outputs[-1].index("error: stage ") :]
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    if failed_at == "validate":
        # Data that failed validation never reaches featurize.
        code, output = keel("stage", "featurize", "--params", str(root / "params.yaml"))
        assert code != 0
        assert "records a failed validation" in output
        before.pop(paths.table)  # the rejected table stays for inspection, never used
    # Nothing earlier was overwritten: an unreadable source leaves the last good table.
    assert {p: tree_md5(p) for p in before} == before


@pytest.mark.slow
def test_real_process_exit_code_and_stderr(trained_project: Path, tmp_path: Path) -> None:
    root = tmp_path / "project"
    shutil.copytree(trained_project, root)
    (root / "data/raw/hotel_bookings.csv.gz").write_bytes(b"")
    keel_bin = Path(sys.executable).parent / "keel"
    done = subprocess.run(
        [str(keel_bin), "stage", "ingest"], cwd=root, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "error: stage 'ingest' failed" in done.stderr
    assert "is empty" in done.stderr


def test_malformed_params_is_a_clear_error(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("data: [unclosed\n")
    code, output = keel("stage", "ingest", "--params", str(params))
    assert code == 1
    assert "is not valid YAML" in output


def test_help_shows_examples() -> None:
    code, output = keel("--help")
    assert code == 0
    assert "keel train" in output and "dvc repro" in output
    code, output = keel("stage", "--help")
    assert all(stage in output for stage in STAGES)
