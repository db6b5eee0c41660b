"""The Prefect server `keel server start` runs: SQLite's lock wait bounded (flows.prefect_server).

A real server on a free port: while the test holds SQLite's write lock on the server's own
database, a write request must come back within a few seconds of the configured busy timeout,
not after Prefect's 60 s. That wait is what froze the whole server for a minute at a time
during `make demo` (see the module's docstring).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.server.database.configurations import AioSqliteConfiguration

from flows.prefect_server import (
    BUSY_TIMEOUT_ENV,
    DEFAULT_BUSY_TIMEOUT_MS,
    bound_sqlite_busy_timeout,
    busy_timeout_ms,
)
from tests.e2e.conftest import running_server

PREFECT_BUSY_TIMEOUT_MS = 60_000


def _busy_timeout_after_setup() -> int:
    connection = sqlite3.connect(":memory:")
    try:
        config = AioSqliteConfiguration(connection_url="sqlite+aiosqlite:///:memory:")
        config.setup_sqlite(connection, None)  # type: ignore[arg-type]
        return int(connection.execute("PRAGMA busy_timeout").fetchone()[0])
    finally:
        connection.close()


@pytest.fixture()
def restore_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo the patch after the test (monkeypatch restores the original attribute)."""
    monkeypatch.setattr(AioSqliteConfiguration, "setup_sqlite", AioSqliteConfiguration.setup_sqlite)


@pytest.mark.usefixtures("restore_setup")
def test_patch_sets_the_busy_timeout_after_prefects_own_pragmas() -> None:
    assert _busy_timeout_after_setup() == PREFECT_BUSY_TIMEOUT_MS  # Prefect's, unpatched
    prefects = AioSqliteConfiguration.setup_sqlite
    assert bound_sqlite_busy_timeout(1234)
    assert _busy_timeout_after_setup() == 1234
    assert bound_sqlite_busy_timeout(777)  # a second call replaces the first, never stacks
    assert _busy_timeout_after_setup() == 777
    assert AioSqliteConfiguration.setup_sqlite.__wrapped__ is prefects


def test_busy_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BUSY_TIMEOUT_ENV, raising=False)
    assert busy_timeout_ms() == DEFAULT_BUSY_TIMEOUT_MS
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "2500")
    assert busy_timeout_ms() == 2500
    for bad in ("5s", "0", "-1"):
        monkeypatch.setenv(BUSY_TIMEOUT_ENV, bad)
        with pytest.raises(SystemExit, match=BUSY_TIMEOUT_ENV):
            busy_timeout_ms()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`keel server start`'s command, busy timeout 1 s; (its API URL, its SQLite database)."""
    database = tmp_path / "prefect.db"
    with running_server(
        tmp_path,
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{database}",
        **{BUSY_TIMEOUT_ENV: "1000"},
    ) as env:
        yield env["PREFECT_API_URL"], database


@pytest.mark.slow
def test_a_held_write_lock_fails_a_write_within_the_bound_not_after_a_minute(
    server: tuple[str, Path],
) -> None:
    api, database = server
    with httpx.Client(timeout=120) as client:
        created = client.post(f"{api}/variables/", json={"name": "probe", "value": 1})
        assert created.status_code == 201, created.text
        blocker = sqlite3.connect(database, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # SQLite's write lock, as a stuck writer holds it
            started = time.monotonic()
            refused = client.post(f"{api}/variables/", json={"name": "second", "value": 2})
            waited = time.monotonic() - started
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # Prefect answers a lock timeout with 503 ("database is locked"), which its client retries.
        assert refused.status_code == 503, refused.text
        # No lower bound: a write whose transaction read first is refused at once (SQLite does
        # not wait to upgrade a read to a write). The bound that matters is the upper one.
        assert waited < 15, f"the write waited {waited:.1f} s for the lock (bound: 1 s)"
    # Writes work again once the lock is gone. On a new connection: the server may drop the one
    # that carried the 503 (a full run once saw the next request on it reset by the peer).
    with httpx.Client(timeout=120) as client:
        done = client.patch(f"{api}/variables/name/probe", json={"value": 3})
        assert done.status_code == 204, done.text
        assert client.get(f"{api}/variables/name/probe").json()["value"] == 3
