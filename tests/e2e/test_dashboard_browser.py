"""The dashboard in a real browser: headless Chromium (the system's, through Playwright)
opens the pages of a running server on a small populated database and checks that the charts
drew the database's numbers, then saves screenshots for a person to look at.

CI installs Debian's chromium and sets KEEL_REQUIRE_BROWSER=1, so a missing browser fails
there; elsewhere the test is skipped without one. Screenshots go to KEEL_SCREENSHOT_DIR
(default: reports/screenshots/).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keel.store import DriftResult, MonitoringMetric, Prediction
from tests.api.conftest import API_KEY, make_app
from tests.api.helpers import running_server, to_records
from tests.api.project import private_copy, registry_of, served_project

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        message = "Chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("KEEL_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; KEEL_REQUIRE_BROWSER=1 requires it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def dashboard_project(tmp_path_factory: pytest.TempPathFactory, hotel_sample: pd.DataFrame) -> Path:
    served = served_project(tmp_path_factory.getbasetemp(), hotel_sample)
    return private_copy(served, tmp_path_factory.mktemp("browser") / "project")


@pytest.fixture(scope="module")
def base_url(dashboard_project: Path) -> Iterator[str]:
    app = make_app(dashboard_project)
    with running_server(app) as url:
        # Some online traffic, so the volume chart has served predictions too.
        headers = {"X-API-Key": API_KEY}
        features = httpx.get(f"{url}/v1/model", headers=headers).json()["served"]["features"]
        feed = pd.read_csv(dashboard_project / "data/raw/hotel_bookings.csv.gz").iloc[:12]
        records = to_records(feed, features["numeric"] + features["other"])
        answer = httpx.post(f"{url}/v1/predict", json={"records": records}, headers=headers)
        assert answer.status_code == 200
        assert app.state.keel.recorder.wait_idle(timeout=20)
        yield url


@pytest.fixture(scope="module")
def browser_page(base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            http_credentials={"username": "keel", "password": API_KEY},
            viewport={"width": 1400, "height": 1000},
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # Offline: any request that leaves this server fails the test.
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        yield page
        context.close()
        assert errors == [], errors
        assert all(url.startswith(base_url) for url in requested), requested


def _open(page: Any, url: str, name: str) -> None:
    page.goto(url)
    page.wait_for_function("document.body.dataset.charts !== 'drawing'", timeout=30_000)
    assert page.evaluate("document.body.dataset.charts") == "ready"
    folder = Path(os.environ.get("KEEL_SCREENSHOT_DIR", REPO / "reports" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"dashboard-{name}.png"), full_page=True)


TRACES = """(id) => {
  const graph = document.getElementById(id);
  return {
    data: graph.data.map((t) => ({name: t.name, type: t.type, x: t.x, y: t.y, z: t.z})),
    shapes: (graph.layout.shapes || []).length,
    drawnLines: graph.querySelectorAll(".scatterlayer .trace path.js-line").length,
    drawnPoints: graph.querySelectorAll(".scatterlayer .trace .points path").length,
    drawnBars: graph.querySelectorAll(".barlayer .point path").length,
    drawnHeatmaps: graph.querySelectorAll(".heatmaplayer image").length,
  };
}"""


def _stamp(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def test_overview_charts_draw_the_database_numbers(
    browser_page: Any, base_url: str, dashboard_project: Path
) -> None:
    _open(browser_page, f"{base_url}/dashboard", "overview")
    engine, _ = registry_of(dashboard_project)
    with Session(engine) as session:
        auc = session.execute(
            select(
                MonitoringMetric.model_version, MonitoringMetric.as_of, MonitoringMetric.value
            ).where(MonitoringMetric.metric == "roc_auc")
        ).all()
        by_source = dict(
            session.execute(
                select(Prediction.batch_id.like("api:%"), func.count()).group_by(
                    Prediction.batch_id.like("api:%")
                )
            ).all()
        )
    engine.dispose()

    performance = browser_page.evaluate(TRACES, "performance")
    drawn = {
        (t["name"], x, round(y, 9))
        for t in performance["data"]
        for x, y in zip(t["x"], t["y"], strict=True)
    }
    assert drawn == {(f"v{v}", _stamp(a), round(value, 9)) for v, a, value in auc}
    assert performance["drawnLines"] == len(performance["data"]) == 2  # v1 and v2
    assert performance["drawnPoints"] >= len(auc)
    assert performance["shapes"] == 3  # promotion v1, retraining, promotion v2

    volume = browser_page.evaluate(TRACES, "volume")
    totals = {t["name"]: sum(t["y"]) for t in volume["data"]}
    assert totals == {"batch (score flow)": by_source[0], "served (API)": by_source[1]}
    assert volume["drawnBars"] >= sum(bool(y) for t in volume["data"] for y in t["y"])

    scores = browser_page.evaluate(TRACES, "scores")
    assert scores["drawnBars"] > 0 and sum(sum(t["y"]) for t in scores["data"]) > 0
    champion = browser_page.inner_text("#champion")
    assert "v2" in champion and "Prefect run" in champion


def test_drift_heatmap_draws_the_stored_psi(
    browser_page: Any, base_url: str, dashboard_project: Path
) -> None:
    _open(browser_page, f"{base_url}/dashboard/drift", "drift")
    engine, _ = registry_of(dashboard_project)
    with Session(engine) as session:
        psi = session.execute(
            select(DriftResult.as_of, DriftResult.feature, DriftResult.value).where(
                DriftResult.statistic == "psi"
            )
        ).all()
    engine.dispose()
    heatmap = browser_page.evaluate(TRACES, "drift")
    trace = heatmap["data"][0]
    cells = {
        (x, y): round(z, 9)
        for y, row in zip(trace["y"], trace["z"], strict=True)
        for x, z in zip(trace["x"], row, strict=True)
        if z is not None
    }
    assert cells == {(_stamp(a), f): round(v, 9) for a, f, v in psi}
    assert heatmap["drawnHeatmaps"] == 1
    assert "Window ending 2016-08-12" in browser_page.inner_text("main")
