"""The dashboard's queries and the prediction recorder on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from keel.db import open_database
from keel.registry import repository as repo
from keel.serving import dashboard
from keel.serving.recorder import PredictionRecorder, ServedPrediction
from keel.store import DriftResult, MonitoringMetric, Prediction, ScoreBatch, write_batch

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
UTC = dt.UTC


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keel.db'}"
        return
    name = f"keel_api_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (it runs on dev and CI)")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}").dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _window(as_of: dt.datetime, version: int) -> dict[str, object]:
    return {
        "as_of": as_of,
        "window_start": as_of - dt.timedelta(days=28),
        "window_end": as_of,
        "model_name": "m",
        "model_version": version,
    }


def test_dashboard_queries_and_served_predictions(database_url: str) -> None:
    engine = open_database(database_url)
    with Session(engine) as session, session.begin():
        row = repo.register_version(
            session,
            model_name="m",
            actor="t",
            artifact_uri="file:///x",
            artifact_sha256="a" * 64,
            params={},
            metrics={"holdout": {"roc_auc": 0.9}},
            training_window={"labels_known_by": "2016-07-01"},
            fingerprints={},
            code_version={},
            libraries={},
            device="cpu",
            flow_run_id=None,
        )
        repo.promote(session, "m", row.version, actor="t", reason="first")
        for day, auc in ((8, 0.91), (15, 0.88)):
            when = dt.datetime(2016, 7, day, tzinfo=UTC)
            session.add(MonitoringMetric(**_window(when, 1), metric="roc_auc", value=auc))
            session.add(
                DriftResult(
                    **_window(when, 1),
                    feature="lead_time",
                    statistic="psi",
                    value=day / 100,
                    threshold=0.25,
                    drifted=False,
                )
            )
    as_of = dt.datetime(2016, 7, 15, tzinfo=UTC)
    batch = pd.DataFrame(
        {
            "batch_id": "m@2016-07-15",
            "entity_key": ["a", "b", "c"],
            "as_of": as_of,
            "model_name": "m",
            "model_version": 1,
            "score": [0.05, 0.5, 1.0],
            "decision": [0, 1, 1],
            "reasons": [[], [], []],
            "scored_at": as_of,
        }
    )
    with engine.begin() as connection:
        write_batch(
            connection,
            ScoreBatch(
                batch_id="m@2016-07-15",
                model_name="m",
                model_version=1,
                as_of=as_of,
                rows=3,
                quarantined=0,
            ),
            batch,
        )
    recorder = PredictionRecorder(engine)
    now = dt.datetime.now(UTC)
    recorder.submit(
        [ServedPrediction("m", 1, k, 0.99, 1, [{"feature": "x"}], now) for k in ("a", "a", "z")]
    )
    assert recorder.flush() == 3
    with Session(engine) as session:
        stored = session.scalar(select(func.count()).select_from(Prediction))
        perf = dashboard.performance_figure(session, "m", "roc_auc")
        heat = dashboard.drift_figure(session, "m", 0.25)
        volume = dashboard.volume_figure(session, "m")
        scores = dashboard.score_figure(session, "m", 28)
        window, rows = dashboard.drift_table(session, "m", None)
        versions = dashboard.version_rows(session, "m", "http://ui", "roc_auc")
        audit = dashboard.audit_rows(session, "m")
    engine.dispose()
    assert stored == 6
    assert perf["data"][0]["y"] == [0.91, 0.88] and len(perf["layout"]["shapes"]) == 1
    assert heat["data"][0]["z"] == [[0.08, 0.15]]
    totals = {t["meta"]["source"]: sum(t["y"]) for t in volume["data"]}
    assert totals == {"batch": 3, "api": 3}
    assert sum(sum(t["y"]) for t in scores["data"]) == 3  # the latest 28 days: served ones
    assert window == "2016-07-15 00:00:00" and rows[0]["feature"] == "lead_time"
    assert versions[0]["aliases"] == ["champion"] and [a["event"] for a in audit][:1] == [
        "promoted"
    ]
