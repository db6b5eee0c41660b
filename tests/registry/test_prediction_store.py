"""Batch writes on SQLite (executemany) and PostgreSQL (COPY): atomic, once, readable."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from keel.store import Prediction, QuarantinedRow, ScoreBatch, record_outcomes, write_batch

AS_OF = dt.datetime(2016, 7, 15, tzinfo=dt.UTC)


def batch(batch_id: str, rows: int) -> tuple[ScoreBatch, pd.DataFrame]:
    frame = pd.DataFrame(
        {
            "batch_id": batch_id,
            "entity_key": [f"k{i}" for i in range(rows)],
            "as_of": AS_OF,
            "model_name": "m",
            "model_version": 3,
            "score": [i / rows for i in range(rows)],
            "decision": [int(i / rows >= 0.5) for i in range(rows)],
            "reasons": [[{"feature": "lead_time", "value": "7", "contribution": 0.1}]] * rows,
            "scored_at": AS_OF,
        }
    )
    row = ScoreBatch(
        batch_id=batch_id, model_name="m", model_version=3, as_of=AS_OF, rows=rows, quarantined=1
    )
    return row, frame


def count(engine: Engine) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(Prediction)) or 0


def test_write_once_and_read_back(engine: Engine) -> None:
    row, frame = batch("b1", 500)
    held = [QuarantinedRow(batch_id="b1", entity_key="bad", reasons=["x"], record={"a": 1})]
    with engine.begin() as connection:
        summary = write_batch(connection, row, frame, held)
    assert (summary.written, summary.quarantined, summary.skipped) == (500, 1, False)
    again_row, again = batch("b1", 500)
    with engine.begin() as connection:
        assert write_batch(connection, again_row, again).skipped
    assert count(engine) == 500
    with Session(engine) as s:
        first = s.scalars(select(Prediction).where(Prediction.entity_key == "k250")).one()
        assert first.score == pytest.approx(0.5) and first.decision == 1
        assert first.reasons[0]["feature"] == "lead_time"
        assert first.as_of.replace(tzinfo=dt.UTC) == AS_OF


def test_a_failed_transaction_leaves_no_row(engine: Engine) -> None:
    row, frame = batch("b2", 300)
    with pytest.raises(RuntimeError), engine.begin() as connection:
        write_batch(connection, row, frame)
        raise RuntimeError("crash after the bulk write, before commit")
    assert count(engine) == 0
    with Session(engine) as s:
        assert s.get(ScoreBatch, "b2") is None


def test_outcomes_are_recorded_once(engine: Engine) -> None:
    row, frame = batch("b3", 10)
    with engine.begin() as connection:
        write_batch(connection, row, frame)
    outcomes = pd.DataFrame(
        {"entity_key": ["k1", "k2", "never"], "label": [1, 0, 1], "observed_at": [AS_OF] * 3}
    )
    with engine.begin() as connection:
        assert record_outcomes(connection, outcomes) == (3, 1)
    with engine.begin() as connection:
        assert record_outcomes(connection, outcomes) == (0, 0)
