"""Registry databases: a SQLite file and a throwaway PostgreSQL database per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.orm import Session

from keel.db import open_database
from keel.registry import repository as repo

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each backend (PostgreSQL: created and dropped here)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    if not _pg_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (it runs on dev and CI)")
    name = f"keel_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        from sqlalchemy import create_engine

        create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}").dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


LINEAGE = {
    "artifact_uri": "file:///nowhere",
    "params": {"train": {"seed": 1}},
    "training_window": {"labels_known_by": "2016-07-01"},
    "fingerprints": {"source_md5": "abc"},
    "code_version": {"commit": "deadbeef", "dirty": False},
    "libraries": {"xgboost": "3.2.0"},
    "device": "cpu",
    "flow_run_id": None,
}


def register(session: Session, name: str = "m", auc: float = 0.9, sha: str | None = None) -> int:
    """Register a version with placeholder lineage; returns its number."""
    row = repo.register_version(
        session,
        model_name=name,
        actor="tester",
        artifact_sha256=sha or uuid.uuid4().hex * 2,
        metrics={"holdout": {"roc_auc": auc}},
        **LINEAGE,
    )
    return row.version


@pytest.fixture()
def engine(database_url: str):  # type: ignore[no-untyped-def]
    eng = open_database(database_url)
    yield eng
    eng.dispose()
