"""Shared fixtures: small copies of the project on real (sampled) hotel data."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "data/raw/hotel_bookings.csv.gz"

# Keep Prefect offline and out of the user's home during tests.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def hotel_frame() -> pd.DataFrame:
    """The real hotel bookings, read once."""
    return pd.read_csv(SOURCE)


@pytest.fixture(scope="session")
def hotel_sample(hotel_frame: pd.DataFrame) -> pd.DataFrame:
    """A seeded 8 % sample of the real data, in source order (every month is represented)."""
    return hotel_frame.sample(frac=0.08, random_state=7).sort_index()


def make_project(
    root: Path, frame: pd.DataFrame, *, fast: bool = True, with_code: bool = False
) -> Path:
    """Lay out a Keel project in `root` with the repo's params, suite and dvc.yaml.

    Args:
        root: Empty folder.
        frame: The raw table, written where params.yaml expects the source.
        fast: Fewer boosting rounds, for tests that do not check model quality.
        with_code: Also copy keel/ and tasks/, which dvc.yaml lists as dependencies.
    """
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if fast:
        params["train"]["num_boost_round"] = 150
        params["train"]["early_stopping_rounds"] = 20
        params["train"]["xgboost"]["eta"] = 0.2
    (root / "data/raw").mkdir(parents=True)
    frame.to_csv(root / params["ingest"]["source"], index=False)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(REPO / "expectations", root / "expectations")
    if with_code:
        shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
        for package in ("keel", "tasks"):
            shutil.copytree(
                REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
            )
    return root


@pytest.fixture()
def small_project(tmp_path: Path, hotel_sample: pd.DataFrame) -> Path:
    """A project on the 8 % sample, without DVC."""
    return make_project(tmp_path / "project", hotel_sample)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
