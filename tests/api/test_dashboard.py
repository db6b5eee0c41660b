"""The dashboard's data against the database, and its pages (server side; see
tests/e2e/test_dashboard_browser.py for the charts drawn in a real browser)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keel.serving import dashboard
from keel.store import DriftResult, MonitoringMetric, Prediction
from tests.api.helpers import TestClient
from tests.api.project import FLOW_RUN_IDS, V1_MONITORS, V2_MONITORS, registry_of

NAME = "hotel-cancellations"


def figure(page: str, name: str) -> dict:
    match = re.search(
        rf'<script type="application/json" data-figure="{name}">(.*?)</script>', page, re.S
    )
    assert match, f"no figure {name}"
    return json.loads(match.group(1))


def test_performance_has_one_line_per_version_and_the_event_markers(served: Path) -> None:
    engine, _ = registry_of(served)
    with Session(engine) as session:
        fig = dashboard.performance_figure(session, NAME, "roc_auc")
        stored = session.execute(
            select(MonitoringMetric.model_version, MonitoringMetric.as_of, MonitoringMetric.value)
            .where(MonitoringMetric.metric == "roc_auc")
            .order_by(MonitoringMetric.as_of)
        ).all()
    engine.dispose()
    assert stored, "the served project has monitored performance"
    drawn = {
        (int(t["name"][1:]), x, y) for t in fig["data"] for x, y in zip(t["x"], t["y"], strict=True)
    }
    assert drawn == {(v, a.strftime("%Y-%m-%d %H:%M:%S"), value) for v, a, value in stored}
    markers = {(m["kind"], m["x"], m["text"]) for m in fig["layout"]["meta"]["markers"]}
    assert markers == {
        ("promotion", "2016-07-01 00:00:00", "v1 promoted"),
        ("retraining", "2016-08-01 00:00:00", "retraining"),
        ("promotion", "2016-08-01 00:00:00", "v2 promoted"),
    }
    assert len(fig["layout"]["shapes"]) == 3


def test_drift_heatmap_is_the_stored_psi(served: Path) -> None:
    engine, _ = registry_of(served)
    with Session(engine) as session:
        fig = dashboard.drift_figure(session, NAME, 0.25)
        stored = session.execute(
            select(DriftResult.as_of, DriftResult.feature, DriftResult.value).where(
                DriftResult.statistic == "psi"
            )
        ).all()
    engine.dispose()
    heat = fig["data"][0]
    windows = [m.strftime("%Y-%m-%d %H:%M:%S") for m in sorted(V1_MONITORS + V2_MONITORS)]
    assert heat["x"] == windows and "__score__" in heat["y"] and "lead_time" in heat["y"]
    cells = {
        (x, y): z
        for y, row in zip(heat["y"], heat["z"], strict=True)
        for x, z in zip(heat["x"], row, strict=True)
        if z is not None
    }
    assert cells == {(a.strftime("%Y-%m-%d %H:%M:%S"), f): v for a, f, v in stored}


def test_volume_and_score_distribution_add_up_to_the_store(served: Path) -> None:
    engine, _ = registry_of(served)
    with Session(engine) as session:
        volume = dashboard.volume_figure(session, NAME)
        scores = dashboard.score_figure(session, NAME, 28)
        total = session.scalar(select(func.count()).select_from(Prediction))
        end = session.scalar(select(func.max(Prediction.as_of)))
        in_window = session.scalar(
            select(func.count()).where(Prediction.as_of > end - dt.timedelta(days=28))
        )
    engine.dispose()
    assert [t["meta"]["source"] for t in volume["data"]] == ["batch"]  # no API traffic yet
    assert sum(volume["data"][0]["y"]) == total > 0
    assert sum(sum(t["y"]) for t in scores["data"]) == in_window > 0
    assert [t["name"] for t in scores["data"]] == ["v1", "v2"]  # both scored in the window
    assert len(scores["data"][0]["x"]) == dashboard.SCORE_BINS


def test_pages_render_offline_with_the_champion_audit_and_run_links(client: TestClient) -> None:
    overview = client.get("/dashboard")
    assert overview.status_code == 200
    page = overview.text
    for name in ("performance", "volume", "scores"):
        assert figure(page, name)["data"]
    # Plotly comes from this server, nothing from the network.
    assert '<script src="/dashboard/static/plotly.min.js"></script>' in page
    assert not re.search(r"""(src|href)=["']https?://(?!prefect\.example)""", page)
    js = client.get("/dashboard/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert js.headers["content-type"].startswith("text/javascript")
    champion = page[page.index('id="champion"') :]
    assert "v2" in champion and "labels_known_by: 2016-07-03" in champion
    assert f"http://prefect.example:4200/runs/flow-run/{FLOW_RUN_IDS[2]}" in champion
    audit = page[page.index('id="audit"') :]
    assert "promoted" in audit and "retrain" in audit and "registered" in audit

    models = client.get("/dashboard/models").text
    for version, run in FLOW_RUN_IDS.items():
        assert f'href="/dashboard/models/{version}"' in models
        assert f"http://prefect.example:4200/runs/flow-run/{run}" in models
    assert "champion" in models
    card = client.get("/dashboard/models/1").text
    assert "labels_known_by: 2016-07-01" in card and "promoted" in card
    assert client.get("/dashboard/models/9").status_code == 404


def test_drift_page_shows_the_window_asked_for(client: TestClient) -> None:
    latest = client.get("/dashboard/drift").text
    assert "Window ending 2016-08-12 00:00:00" in latest
    assert figure(latest, "drift")["data"][0]["z"]
    older = client.get("/dashboard/drift", params={"as_of": "2016-07-29T00:00:00+00:00"}).text
    assert "Window ending 2016-07-29 00:00:00" in older
    assert client.get("/dashboard/drift", params={"as_of": "last week"}).status_code == 422
