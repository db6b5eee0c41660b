"""Training and monitoring runs publish a Prefect link artifact to their dashboard page."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.production import monitor_flow, outcomes_flow, score_flow
from flows.train import train_flow
from tasks.links import dashboard_url

pytestmark = pytest.mark.usefixtures("prefect_harness")
BASE = "http://keel.example:8000/dashboard"


def _links(key: str) -> list[str]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return [str(a.data) for a in artifacts]


def test_dashboard_url_uses_the_configured_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_DASHBOARD_URL", BASE + "/")
    assert dashboard_url() == BASE
    assert dashboard_url("models/3") == f"{BASE}/models/3"
    assert dashboard_url("drift", as_of="2016-07-22T00:00:00+00:00") == (
        f"{BASE}/drift?as_of=2016-07-22T00%3A00%3A00%2B00%3A00"
    )


@pytest.mark.slow
def test_train_and_monitor_runs_link_to_their_dashboard_pages(
    small_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_DASHBOARD_URL", BASE)
    result = train_flow(root=str(small_project))
    assert any(f"({BASE}/models/{result['version']})" in link for link in _links("dashboard-model"))
    for day in (8, 15):
        score_flow(root=str(small_project), as_of=dt.datetime(2016, 7, day, tzinfo=dt.UTC))
    outcomes_flow(root=str(small_project), as_of=dt.datetime(2016, 10, 1, tzinfo=dt.UTC))
    monitor_flow(root=str(small_project), as_of=dt.datetime(2016, 7, 15, tzinfo=dt.UTC))
    expected = f"({BASE}/drift?as_of=2016-07-15T00%3A00%3A00%2B00%3A00)"
    assert any(expected in link for link in _links("dashboard-monitor"))
