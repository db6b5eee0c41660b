"""Database engines and migrations for every Keel table (registry now, prediction store next).

SQLite is the embedded default (WAL, a busy timeout, and `BEGIN IMMEDIATE` so writers queue
instead of failing); PostgreSQL is first class. Alembic migrations run on first use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

__all__ = [
    "DatabaseUnavailableError",
    "migrate",
    "open_database",
    "redact",
    "run_transaction",
]

T = TypeVar("T")

log = logging.getLogger(__name__)
_MIGRATIONS = Path(__file__).parent / "migrations"
_migrated: set[str] = set()
_lock = threading.Lock()


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached or opened; the message names it (without password)."""


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's 'begin' below own transactions (pysqlite's own BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Take the write lock up front: read-then-write transactions (alias moves) serialize.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _create_engine(url: str) -> Engine:
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise DatabaseUnavailableError(f"KEEL_DATABASE_URL is not a valid URL: {exc}") from None
    if backend == "sqlite":
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (safe to call concurrently)."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_database(url: str) -> Engine:
    """Create an engine and apply pending migrations once per process.

    Args:
        url: SQLAlchemy database URL.

    Returns:
        A ready engine.

    Raises:
        DatabaseUnavailableError: The database cannot be reached; nothing was changed.
    """
    engine = _create_engine(url)
    try:
        with _lock:
            if url not in _migrated:
                migrate(engine)
                _migrated.add(url)
    except (OperationalError, DBAPIError) as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailableError(
            f"cannot open the Keel database at {redact(url)}: {reason}. "
            "Check KEEL_DATABASE_URL and that the server is running."
        ) from None
    return engine


def _connection_lost(exc: BaseException, connection: Connection) -> bool:
    """Whether `exc` means the database connection itself is gone (not a refused statement)."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    dbapi = connection.dialect.loaded_dbapi
    if not isinstance(exc, dbapi.Error):
        return False
    # A driver error raised outside SQLAlchemy (PostgreSQL COPY goes to the driver directly).
    try:
        driver = connection.connection.driver_connection
    except Exception:  # the connection was already invalidated
        return True
    return bool(connection.dialect.is_disconnect(exc, driver, None))


def run_transaction(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    what: str,
    attempts: int = 3,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> T:
    """Run `work` in one transaction; if the connection is lost, roll back and run it again.

    Only for idempotent work (it may run more than once): writing a batch that is skipped once
    stored, inserting outcomes that are ignored once recorded. A lost connection rolls the
    whole transaction back (the server never commits half of it), is logged with what was
    being written and the attempt, and the work is retried on a fresh connection. Any other
    error is raised at once.

    Args:
        engine: The database.
        work: Writes through the connection it is given, inside the transaction.
        what: What is being written, for the log line ("writing batch m@2016-07-15").
        attempts: How many times in all.
        logger: Where the log line goes (default: this module's logger).

    Returns:
        What `work` returned on the attempt that committed.

    Raises:
        DatabaseUnavailableError: The connection was lost on every attempt; nothing was written.
    """
    log_to = logger or log
    for attempt in range(1, attempts + 1):
        with engine.connect() as connection:
            try:
                with connection.begin():
                    return work(connection)
            except Exception as exc:
                if not _connection_lost(exc, connection):
                    raise
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                if attempt == attempts:
                    tries = f" on each of {attempts} attempts" if attempts > 1 else ""
                    raise DatabaseUnavailableError(
                        f"database connection lost while {what}{tries} ({reason}): the "
                        "transaction was rolled back, nothing was written; run it again"
                    ) from None
                log_to.warning(
                    "database connection lost while %s (%s): the transaction was rolled back; "
                    "retrying (attempt %d of %d)",
                    what,
                    reason,
                    attempt + 1,
                    attempts,
                )
        time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover
