"""Fixtures of the reliability suite: a trained champion, private copies, database snapshots,
throwaway PostgreSQL databases and the figures each test reports (reports/reliability/)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from sqlalchemy import MetaData, create_engine, select

from keel.fingerprint import tree_md5
from keel.layout import ProjectPaths
from tests.conftest import make_project
from tests.e2e.conftest import prefect_server  # noqa: F401  (a fixture used by the storm)

REPO = Path(__file__).resolve().parents[2]
FIGURES = Path(os.environ.get("KEEL_RELIABILITY_DIR", REPO / "reports" / "reliability"))
PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
PG_BASE = "postgresql+psycopg://root@127.0.0.1:5432"

# Every subprocess that may run XGBoost sleeps its idle OpenMP threads (2 shared cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def machine() -> dict[str, Any]:
    """Where and when figures were taken."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "python": platform.python_version(),
        "load_average_1_5_15": load,
    }


class Figures:
    """Figures of one section, written to reports/reliability/<section>.json at session end."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Any]] = {}

    def section(self, name: str) -> dict[str, Any]:
        """The mutable figures of a section."""
        return self.sections.setdefault(name, {})

    def write(self) -> None:
        """Merge into the files: a run of some tests updates their figures, keeps the rest."""
        FIGURES.mkdir(parents=True, exist_ok=True)
        for name, values in self.sections.items():
            path = FIGURES / f"{name}.json"
            payload = json.loads(path.read_text()) if path.is_file() else {}
            run = machine()
            for key, value in values.items():
                payload[key] = {**value, "run": run} if isinstance(value, dict) else value
            payload.update(run)
            path.write_text(json.dumps(payload, indent=2, default=str))


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    collected = Figures()
    yield collected
    collected.write()


@pytest.fixture(scope="session")
def champion(
    tmp_path_factory: pytest.TempPathFactory, hotel_sample: pd.DataFrame, prefect_harness: None
) -> Path:
    """A project on the 8 % sample whose model was trained by `train_flow` and promoted (v1)."""
    from flows.train import train_flow

    root = make_project(tmp_path_factory.mktemp("reliability") / "champion", hotel_sample)
    result = train_flow(root=str(root))
    assert result["decision"]["outcome"] == "promote"
    return root


def copy_project(source: Path, target: Path) -> Path:
    """A private copy (own SQLite registry, store and outputs) of a project."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("retrain", "prefect"))
    return target


def sqlite_url(root: Path) -> str:
    return f"sqlite:///{ProjectPaths(root).state_dir / 'keel.db'}"


def db_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every Keel table (sorted), to compare before and after a case."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {
                name: sorted((tuple(map(repr, r)) for r in conn.execute(select(table))), key=str)
                for name, table in meta.tables.items()
                if name != "alembic_version"
            }
    finally:
        engine.dispose()


def outputs_md5(root: Path) -> dict[str, str]:
    """The md5 of each stage output that a later stage or the registry relies on."""
    paths = ProjectPaths(root)
    wanted = {
        "features": paths.features_dir,
        "model": paths.model_dir,
        "metrics": paths.metrics,
        "artifacts": paths.state_dir / "artifacts" / "objects",
    }
    return {name: tree_md5(path) if path.exists() else "absent" for name, path in wanted.items()}


def digest(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, str]:
    """One sha256 per table (short, for messages)."""
    return {
        name: hashlib.sha256(repr(values).encode()).hexdigest()[:12]
        for name, values in rows.items()
    }


def assert_only_added(
    before: dict[str, list[tuple[Any, ...]]],
    after: dict[str, list[tuple[Any, ...]]],
    allowed: frozenset[str] = frozenset(),
) -> None:
    """No row was changed or lost anywhere; rows were added only to the `allowed` tables."""
    for table, rows in before.items():
        now = after.get(table, [])
        missing = set(rows) - set(now)
        assert not missing, f"{len(missing)} rows of {table} were changed or lost"
        if table not in allowed:
            assert len(now) == len(rows), f"{table}: {len(now) - len(rows)} unexpected new rows"


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not _pg_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (it runs on dev and CI)")
    name = f"keel_rel_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of this folder carries the `reliability` marker (`pytest -m reliability`)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)
