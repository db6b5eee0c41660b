"""Scale-out fixtures: a Dask cluster of two worker processes, throwaway PostgreSQL databases."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from distributed import LocalCluster

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="package")
def dask_address() -> Iterator[str]:
    """A `LocalCluster` of 2 worker processes x 1 thread (no dashboard, no network).

    Closed when the tests of this folder are done: left running, its scheduler's periodic
    work draws from the global `random` in a background thread, which Hypothesis (in
    tests/unit) reports as a strategy using `random`.
    """
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()


@pytest.fixture()
def on_dask(dask_address: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point `engine: dask` at the test cluster (KEEL_DASK_ADDRESS wins over params)."""
    monkeypatch.setenv("KEEL_DASK_ADDRESS", dask_address)
    return dask_address


def use_engine(root: Path, kind: str) -> None:
    """Set `engine.kind` in a project's params.yaml."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params.setdefault("engine", {})["kind"] = kind
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture()
def pg_database() -> Iterator[Callable[[], str]]:
    """A maker of throwaway PostgreSQL databases (each dropped after the test)."""
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            pass
    except psycopg.OperationalError:
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (it runs on dev and CI)")
    names: list[str] = []

    def make() -> str:
        name = f"keel_scale_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return name

    yield make
    for name in names:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
