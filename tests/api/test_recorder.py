"""Served predictions go to the prediction store off the request path, and are monitored."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from keel.config import load_params
from keel.serving.recorder import PredictionRecorder, ServedPrediction, api_batch_id
from keel.store import Prediction, ScoreBatch, record_outcomes
from tasks.production import load_records, monitor_window
from tests.api.conftest import API_KEY, make_app
from tests.api.helpers import TestClient, to_records
from tests.api.project import registry_of


def test_served_predictions_are_stored_and_monitored(project: Path) -> None:
    params = load_params(project / "params.yaml")
    feed = load_records(project, params)
    # Bookings whose outcomes the served project has not recorded yet (known after 2016-10-01).
    feed = feed[feed["_label_time"] > pd.Timestamp("2016-10-01")]
    app = make_app(project)
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        features = client.get("/v1/model").json()["served"]["features"]
        rows = to_records(feed.iloc[:4], features["numeric"] + features["other"], "booking_id")
        rows.append({**rows[0]})  # the same booking again, in the same second
        del rows[3]["booking_id"]  # a record without a key gets one made up
        before = dt.datetime.now(dt.UTC)
        answer = client.post("/v1/predict", json={"records": rows})
        assert answer.status_code == 200
        served = answer.json()["predictions"]
        assert app.state.keel.recorder.wait_idle(timeout=20)
        metrics = client.get("/metrics").text
    assert "keel_api_predictions_logged_total 5.0" in metrics

    engine, _ = registry_of(project)
    with Session(engine) as session:
        batches = session.scalars(select(ScoreBatch).where(ScoreBatch.batch_id.like("api:%"))).all()
        stored = session.scalars(select(Prediction).where(Prediction.batch_id.like("api:%"))).all()
    # The repeated booking went to a second batch: a batch holds a key once.
    assert len(batches) == 2 and sum(b.rows for b in batches) == 5
    assert all(b.batch_id.startswith("api:hotel-cancellations@") for b in batches)
    assert sorted(p.entity_key for p in stored) == sorted(p["entity_key"] for p in served)
    assert {p.model_version for p in stored} == {2}
    by_key = {p.entity_key: p for p in stored}
    assert by_key[served[1]["entity_key"]].score == served[1]["score"]
    assert by_key[served[1]["entity_key"]].reasons == served[1]["reasons"]
    as_of = by_key[served[1]["entity_key"]].as_of.replace(tzinfo=dt.UTC)
    assert before - dt.timedelta(seconds=1) <= as_of <= dt.datetime.now(dt.UTC)

    # Their outcomes arrive; the monitor flow's task sees the served predictions like batch ones.
    keys = [r["booking_id"] for r in rows[:3]]
    with engine.begin() as connection:
        record_outcomes(
            connection,
            pd.DataFrame(
                {"entity_key": keys, "label": [0.0, 1.0, 0.0], "observed_at": [as_of] * 3}
            ),
        )
    engine.dispose()
    result = monitor_window.fn(project, params, dt.datetime.now(dt.UTC))
    assert result.model_version == 2
    assert result.rows >= 4  # the served predictions of the window (2016's are far outside)
    assert result.labelled == 3


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path: Path) -> None:
    from keel.db import open_database

    engine = open_database(f"sqlite:///{tmp_path / 'keel.db'}")
    dropped: list[int] = []
    recorder = PredictionRecorder(engine, max_queued=2, on_dropped=dropped.append)
    now = dt.datetime.now(dt.UTC)
    items = [ServedPrediction("m", 1, f"k{i}", 0.5, 1, [], now) for i in range(5)]
    recorder.submit(items)  # not started: nothing drains the queue
    assert dropped == [3]
    assert recorder.flush() == 2
    assert len(api_batch_id("x" * 100, now)) <= 120
    engine.dispose()
