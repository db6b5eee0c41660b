"""`prefect server start`, with SQLite's lock wait bounded: what `keel server start` runs.

    python -m flows.prefect_server server start --host 127.0.0.1 --port 4200

Why: on SQLite, Prefect's server freezes for a whole minute every few minutes under a steady
load of flow runs (six times in a 25-minute `make demo`; upstream: PrefectHQ/prefect#10188).
Read off the frozen server with `py-spy dump --native`: the garbage collector, run on the event
loop's thread, frees an aiosqlite cursor, and freeing it (`sqlite3_reset`) waits for its
connection's mutex, held with the GIL by that connection's worker thread, which sits in
SQLite's busy handler waiting for the write lock. The lock belongs to a transaction whose
next statement (its COMMIT) only the frozen event loop can send, so nothing moves until the
busy handler gives up: Prefect sets `PRAGMA busy_timeout` to 60 s. Here each connection gets
`KEEL_PREFECT_SQLITE_BUSY_TIMEOUT_MS` instead (default 5,000 ms): the same deadlock is broken
after 5 s. A write waits that long only in this deadlock (Prefect's writes hold the lock for
milliseconds), and the statement that gives up fails just as it did after 60 s: the API
answers 503, which Prefect's client retries, and a server service logs the error.

Everything else is Prefect's own CLI, unchanged; with PostgreSQL the patch does nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

BUSY_TIMEOUT_ENV = "KEEL_PREFECT_SQLITE_BUSY_TIMEOUT_MS"
DEFAULT_BUSY_TIMEOUT_MS = 5000

log = logging.getLogger(__name__)


def busy_timeout_ms() -> int:
    """The configured busy timeout (milliseconds), from the environment or the default."""
    raw = os.environ.get(BUSY_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_BUSY_TIMEOUT_MS
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(
            f"{BUSY_TIMEOUT_ENV}={raw!r} is not a whole number of milliseconds (e.g. 5000)"
        ) from None
    if value <= 0:
        raise SystemExit(f"{BUSY_TIMEOUT_ENV} must be positive (got {value})")
    return value


def bound_sqlite_busy_timeout(timeout_ms: int) -> bool:
    """Make every SQLite connection of Prefect's server wait at most `timeout_ms` for a lock.

    Returns:
        False when this Prefect has no such setup hook (a newer release): nothing is changed.
    """
    try:
        from prefect.server.database.configurations import AioSqliteConfiguration
    except ImportError:
        return False
    prefect_setup = getattr(AioSqliteConfiguration, "setup_sqlite", None)
    if prefect_setup is None:
        return False
    if getattr(prefect_setup, "_keel_busy_timeout", None) is not None:
        prefect_setup = prefect_setup.__wrapped__  # patched already: replace, do not stack

    def setup_sqlite(self: Any, conn: Any, record: Any) -> None:
        prefect_setup(self, conn, record)  # Prefect's PRAGMAs, busy_timeout = 60000 among them
        cursor = conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(timeout_ms)};")
        cursor.close()

    setup_sqlite.__wrapped__ = prefect_setup  # type: ignore[attr-defined]
    setup_sqlite._keel_busy_timeout = timeout_ms  # type: ignore[attr-defined]
    AioSqliteConfiguration.setup_sqlite = setup_sqlite  # type: ignore[method-assign]
    return True


def main() -> None:
    """Run Prefect's CLI with the patch in place (arguments as for `prefect`)."""
    if not bound_sqlite_busy_timeout(busy_timeout_ms()):
        log.warning("this Prefect has no SQLite setup hook: its own busy timeout applies")
    from prefect.cli import app

    app()


if __name__ == "__main__":
    main()
