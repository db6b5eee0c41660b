"""PostgreSQL end to end: Prefect's server, Keel's registry and the prediction store on the
local PostgreSQL server (README "Run it for a team").

A real Prefect server (as `keel server start` runs it) on a PostgreSQL database of its own
(`PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://...`); `keel train` and `keel score`
run as subprocesses against it with `KEEL_DATABASE_URL=postgresql+psycopg://...`. The test
reads the three stores back from PostgreSQL and checks that nothing fell back to SQLite.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from tests.conftest import make_project
from tests.e2e.conftest import running_server

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
PG = "postgres@127.0.0.1:5432"


@pytest.fixture()
def team_env(tmp_path: Path, pg_database: Callable[[], str]) -> Iterator[dict[str, str]]:
    """A Prefect server on PostgreSQL, and the environment of a Keel process using it."""
    prefect_db, keel_db = pg_database(), pg_database()
    with running_server(
        tmp_path,
        PREFECT_API_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://{PG}/{prefect_db}",
        KEEL_DATABASE_URL=f"postgresql+psycopg://{PG}/{keel_db}",
        PREFECT_DB=prefect_db,
        KEEL_DB=keel_db,
    ) as env:
        yield env


def _query(database: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(f"postgresql://{PG}/{database}") as conn:
        return list(conn.execute(sql).fetchall())


def test_prefect_registry_and_prediction_store_all_on_postgres(
    team_env: dict[str, str], tmp_path: Path, hotel_sample: pd.DataFrame
) -> None:
    root = make_project(tmp_path / "project", hotel_sample)
    keel = str(BIN / "keel")
    for command in (["train"], ["score", "--as-of", "2016-08-01"]):
        done = subprocess.run(
            [keel, *command], cwd=root, env=team_env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]

    # Prefect's own state: both flow runs, completed, in its PostgreSQL database.
    runs = _query(
        team_env["PREFECT_DB"],
        "SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id",
    )
    assert sorted(runs) == [("score", "COMPLETED"), ("train", "COMPLETED")]
    task_runs = _query(team_env["PREFECT_DB"], "SELECT count(*) FROM task_run")
    assert task_runs[0][0] >= 7  # five stages, register, gate, score

    # Keel's registry and prediction store, in Keel's PostgreSQL database.
    keel_db = team_env["KEEL_DB"]
    versions = _query(keel_db, "SELECT version, flow_run_id FROM model_versions")
    assert len(versions) == 1 and versions[0][1] is not None
    aliases = _query(
        keel_db,
        "SELECT a.alias, v.version FROM model_aliases a"
        " JOIN model_versions v ON v.id = a.version_id",
    )
    assert aliases == [("champion", 1)]
    batches = _query(keel_db, "SELECT rows, model_version FROM score_batches")
    predictions = _query(keel_db, "SELECT count(*), count(DISTINCT entity_key) FROM predictions")
    assert len(batches) == 1 and batches[0][0] > 20
    assert predictions[0] == (batches[0][0], batches[0][0])
    assert not (root / ".keel/keel.db").exists(), "nothing may fall back to SQLite"
