"""The prediction store: scored batches, outcomes, monitoring metrics, drift and quarantine.

It lives in the registry's database (same migrations). A batch is written atomically through
the database's bulk path (COPY on PostgreSQL, one `executemany` transaction on SQLite): the
batch row and all its predictions commit together, so a crash leaves all or nothing, and a
batch that exists is complete, so re-running it changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Session, mapped_column

from keel.registry.models import Base

__all__ = [
    "DriftResult",
    "MonitoringMetric",
    "Outcome",
    "Prediction",
    "QuarantinedRow",
    "ScoreBatch",
    "WriteSummary",
    "batch_exists",
    "record_outcomes",
    "write_batch",
]

PREDICTION_COLUMNS = (
    "batch_id",
    "entity_key",
    "as_of",
    "model_name",
    "model_version",
    "score",
    "decision",
    "reasons",
    "scored_at",
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ScoreBatch(Base):
    """One scored batch; its existence means every prediction of it is committed."""

    __tablename__ = "score_batches"

    batch_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[int] = mapped_column(Integer)
    as_of: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    rows: Mapped[int] = mapped_column(Integer)
    quarantined: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Prediction(Base):
    """One scored record."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("batch_id", "entity_key", name="uq_prediction"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("score_batches.batch_id"), index=True)
    entity_key: Mapped[str] = mapped_column(String(200), index=True)
    as_of: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    decision: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[Any] = mapped_column(JSON)
    scored_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Outcome(Base):
    """The truth about a record, once known."""

    __tablename__ = "outcomes"

    entity_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    label: Mapped[float] = mapped_column(Float)
    observed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _WindowRow:
    """Columns shared by every per-window monitoring result."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    as_of: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    window_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[int] = mapped_column(Integer)


class MonitoringMetric(_WindowRow, Base):
    """A performance metric of one model version on one window."""

    __tablename__ = "monitoring_metrics"

    metric: Mapped[str] = mapped_column(String(60))
    value: Mapped[float | None] = mapped_column(Float)


class DriftResult(_WindowRow, Base):
    """Drift of one feature (or the score) on one window against the training reference."""

    __tablename__ = "drift_results"

    feature: Mapped[str] = mapped_column(String(200))
    statistic: Mapped[str] = mapped_column(String(20))
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    drifted: Mapped[bool] = mapped_column(Boolean)


class QuarantinedRow(Base):
    """A record of a scoring batch held back by validation, with the reasons."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("batch_id", "entity_key", name="uq_quarantine"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(120), index=True)
    entity_key: Mapped[str] = mapped_column(String(200))
    reasons: Mapped[Any] = mapped_column(JSON)
    record: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass(frozen=True)
class WriteSummary:
    """What a batch write did."""

    batch_id: str
    written: int
    quarantined: int
    skipped: bool  # the batch already existed: nothing was written


def batch_exists(session: Session, batch_id: str) -> bool:
    """Whether a batch is already (completely) stored."""
    return session.get(ScoreBatch, batch_id) is not None


def _timestamps(values: pd.Series, dialect: str) -> list[Any]:
    # Timestamps of a batch repeat (as_of, scored_at): convert each distinct value once.
    codes, distinct = pd.factorize(values)
    stamps = pd.to_datetime(pd.Series(distinct), utc=True)
    if dialect == "postgresql":
        converted = list(stamps.dt.to_pydatetime())
    else:
        # SQLAlchemy's SQLite DateTime storage format (naive UTC text), so the ORM reads it back.
        converted = list(stamps.dt.tz_localize(None).dt.strftime("%Y-%m-%d %H:%M:%S.%f"))
    lookup = np.array([*converted, None], dtype=object)  # code -1 (missing) -> None
    out: list[Any] = lookup[codes].tolist()
    return out


def _texts(values: pd.Series) -> list[str]:
    if pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values):
        texts: list[str] = values.tolist()  # already JSON text (a spooled batch)
        return texts
    return [
        r if isinstance(r, str) else json.dumps(r, separators=(",", ":")) for r in values.tolist()
    ]


def _rows(frame: pd.DataFrame, dialect: str) -> list[tuple[Any, ...]]:
    """Plain Python values in PREDICTION_COLUMNS order (drivers refuse numpy scalars)."""
    columns = {
        "batch_id": frame["batch_id"].astype(str).tolist(),
        "entity_key": frame["entity_key"].astype(str).tolist(),
        "as_of": _timestamps(frame["as_of"], dialect),
        "model_name": frame["model_name"].astype(str).tolist(),
        # numpy's tolist() gives plain Python ints and floats in one C loop.
        "model_version": frame["model_version"].to_numpy("int64").tolist(),
        "score": frame["score"].to_numpy("float64").tolist(),
        "decision": frame["decision"].to_numpy("int64").tolist(),
        "reasons": _texts(frame["reasons"]),
        "scored_at": _timestamps(frame["scored_at"], dialect),
    }
    return list(zip(*(columns[c] for c in PREDICTION_COLUMNS), strict=True))


def _copy_postgres(connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    driver = connection.connection.driver_connection
    columns = ", ".join(PREDICTION_COLUMNS)
    with driver.cursor() as cursor, cursor.copy(f"COPY predictions ({columns}) FROM STDIN") as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row(row)


def _insert_sqlite(connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    marks = ", ".join("?" for _ in PREDICTION_COLUMNS)
    sql = f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)}) VALUES ({marks})"
    connection.exec_driver_sql(sql, list(rows))


def write_batch(
    connection: Connection,
    batch: ScoreBatch,
    predictions: pd.DataFrame | Iterable[pd.DataFrame],
    quarantined: Sequence[QuarantinedRow] = (),
) -> WriteSummary:
    """Write a whole batch inside the caller's transaction, unless it already exists.

    Args:
        connection: A connection inside an open transaction (`engine.begin()`).
        batch: The batch row.
        predictions: One row per record with the columns of `PREDICTION_COLUMNS` (`reasons`
            as lists or JSON text), as one frame or as consecutive parts (bounded memory).
        quarantined: Rows held back by validation.

    Returns:
        What was written.
    """
    if connection.dialect.name == "postgresql":
        # Two runs writing one batch at once: the second waits here for the first to commit,
        # then finds the batch and skips it (without the lock both would see no batch, and
        # the second would fail on the primary key). SQLite's BEGIN IMMEDIATE does the same.
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:batch))"), {"batch": batch.batch_id}
        )
    with Session(bind=connection) as session:
        if batch_exists(session, batch.batch_id):
            return WriteSummary(batch.batch_id, 0, 0, skipped=True)
        session.add(batch)
        session.add_all(list(quarantined))
        session.flush()
    parts = [predictions] if isinstance(predictions, pd.DataFrame) else predictions
    written = 0
    for part in parts:
        rows = _rows(part, connection.dialect.name)
        if not rows:
            continue
        if connection.dialect.name == "postgresql":
            _copy_postgres(connection, rows)
        else:
            _insert_sqlite(connection, rows)
        written += len(rows)
    return WriteSummary(batch.batch_id, written, len(quarantined), skipped=False)


def record_outcomes(connection: Connection, outcomes: pd.DataFrame) -> tuple[int, int]:
    """Insert outcomes, ignoring those already recorded.

    Args:
        connection: A connection inside an open transaction.
        outcomes: Columns `entity_key`, `label`, `observed_at`.

    Returns:
        (newly recorded, of which never scored).
    """
    known = set(connection.scalars(select(Outcome.entity_key)))
    # Plain Python strings: pandas' hash table, not Arrow's slow `isin` on `str` columns.
    keys = pd.Series(outcomes["entity_key"].astype(str).to_numpy(dtype=object), dtype=object)
    fresh = outcomes[~keys.isin(known).to_numpy()].drop_duplicates("entity_key")
    scored = set(connection.scalars(select(Prediction.entity_key).distinct()))
    if len(fresh):
        # One executemany through the driver, not one ORM object per outcome.
        dialect = connection.dialect.name
        now = _timestamps(pd.Series([_now()] * len(fresh)), dialect)
        rows = list(
            zip(
                fresh["entity_key"].astype(str).tolist(),
                [float(v) for v in fresh["label"]],
                _timestamps(fresh["observed_at"], dialect),
                now,
                strict=True,
            )
        )
        mark = "%s" if dialect == "postgresql" else "?"
        connection.exec_driver_sql(
            "INSERT INTO outcomes (entity_key, label, observed_at, recorded_at) "
            f"VALUES ({', '.join([mark] * 4)})",
            rows,
        )
    never_scored = sum(1 for k in fresh["entity_key"].astype(str) if k not in scored)
    return len(fresh), never_scored
