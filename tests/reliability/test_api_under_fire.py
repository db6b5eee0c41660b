"""`keel api` as a real process under fire: Schemathesis against its OpenAPI schema, then a
fixed-rate load for 60 seconds with two hot swaps (v1 -> v2 -> v3) in the middle of it.

Zero errors, nothing dropped (every request answered and its prediction logged), every
response scored by the one version it names, and the version never goes back: once a
response from a newer version has arrived, no request sent after it gets an older one.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from benchmarks.load import run_load
from flows.production import params_for_retrain
from keel.config import load_params
from keel.history import with_history
from keel.layout import ProjectPaths
from keel.model import load_bundle
from keel.registry import repository as repo
from keel.scoring import score_records
from tasks.production import load_records
from tests.api.conftest import API_KEY
from tests.api.helpers import to_records
from tests.api.project import register_and_promote, registry_of, train_stages
from tests.api.test_hot_swap import keel_api
from tests.reliability.conftest import Figures, copy_project, sqlite_url

pytestmark = pytest.mark.slow
RATE = 20.0  # requests per second, one record each
SECONDS = 60.0
SWAPS_AT = (20.0, 40.0)  # seconds into the load: promote v2, then v3
EXAMPLES = 40  # Schemathesis examples per operation
# The outcome history the load's record is scored with (sent with each request).
AS_OF = dt.datetime(2016, 9, 15, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def three_versions(champion: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The champion project (v1 champion) with v2 and v3 trained later and registered."""
    root = copy_project(champion, tmp_path_factory.mktemp("fire") / "project")
    params = load_params(root / "params.yaml")
    for as_of in (dt.datetime(2016, 8, 1, tzinfo=dt.UTC), dt.datetime(2016, 9, 1, tzinfo=dt.UTC)):
        workdir = ProjectPaths(root).state_dir / "retrain" / as_of.strftime("%Y%m%d")
        workdir.mkdir(parents=True)
        retrain_params = params_for_retrain(params, root, as_of)
        train_stages(workdir, retrain_params)
        register_and_promote(root, workdir, retrain_params, promote=False)
    return root


@pytest.fixture(scope="module")
def server(three_versions: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with keel_api(three_versions, tmp_path_factory.mktemp("api")) as (base, _log):
        yield base


# Schemathesis draws some values with the `random` module inside its strategies; Hypothesis
# flags that (only on the paths that reach it, so the failure was intermittent). Not ours to fix.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_schemathesis_finds_no_failure(server: str, figures: Figures) -> None:
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    tested: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        tested[operation.label] = 0

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            # No 5xx, documented status codes and content types, responses match the schema.
            case.call_and_validate(headers={"X-API-Key": API_KEY})
            tested[case.operation.label] += 1

        check()
    assert "POST /v1/predict" in tested and len(tested) >= 5
    metrics = httpx.get(f"{server}/metrics").text
    assert 'keel_api_errors_total{kind="server"}' not in metrics
    figures.section("schemathesis")["result"] = {
        "operations": len(tested),
        "cases": sum(tested.values()),
        "per_operation": tested,
        "failures": 0,
        "checks": "all (not_a_server_error, status_code_conformance, "
        "content_type_conformance, response_schema_conformance, ...)",
    }


def _expected(root: Path, frame: pd.DataFrame) -> dict[int, float]:
    """What each version scores for the request's record (the same function, offline)."""
    params = load_params(root / "params.yaml")
    engine, store = registry_of(root)
    expected = {}
    with Session(engine) as session:
        for version in (1, 2, 3):
            row = repo.get_version(session, params.gate.model_name, version)
            fetched = store.get_bundle(row.artifact_sha256, root / f"expected-v{version}")
            bundle = load_bundle(fetched)
            rows = with_history(
                frame, load_records(root, params), bundle.spec.history, params.data.target, AS_OF
            )
            scored = score_records(bundle, rows, threshold=params.evaluate.threshold)
            expected[version] = float(scored["score"].iloc[0])
    engine.dispose()
    assert len(set(expected.values())) == 3
    return expected


def _promote_at(root: Path, plan: list[tuple[float, int]], start: float, done: list[float]) -> None:
    params = load_params(root / "params.yaml")
    for offset, version in plan:
        time.sleep(max(0.0, start + offset - time.monotonic()))
        engine, _ = registry_of(root)
        with Session(engine) as s, s.begin():
            repo.promote(s, params.gate.model_name, version, actor="load", reason="hot swap")
        done.append(time.monotonic())
        engine.dispose()


def test_a_minute_of_load_with_two_hot_swaps(
    server: str, three_versions: Path, figures: Figures
) -> None:
    root = three_versions
    headers = {"X-API-Key": API_KEY}
    features = httpx.get(f"{server}/v1/model", headers=headers).json()["served"]["features"]
    frame = load_records(root, load_params(root / "params.yaml")).iloc[:1]
    body = {
        "records": to_records(frame, features["numeric"] + features["other"]),
        "as_of": AS_OF.isoformat(),
    }
    body["records"][0]["booking_id"] = "load-test"
    expected = _expected(root, frame)
    logged_before = _logged(root)

    promoted: list[float] = []
    start = time.monotonic()
    swapper = threading.Thread(
        target=_promote_at, args=(root, list(zip(SWAPS_AT, (2, 3), strict=True)), start, promoted)
    )
    swapper.start()
    report = run_load(server, body, rate=RATE, seconds=SECONDS, headers=headers)
    swapper.join(60)
    summary = report.summary()

    assert summary["requests"] == int(RATE * SECONDS)
    assert report.errors == [], report.errors[:5]  # zero errors, none unanswered
    answered = sorted(report.answers, key=lambda a: a.ended)
    versions = []
    for answer in answered:
        assert answer.body is not None
        version = answer.body["model_version"]
        (prediction,) = answer.body["predictions"]
        assert prediction["model_version"] == version  # one model per request
        assert prediction["score"] == pytest.approx(expected[version], abs=1e-9)
        versions.append(version)
    assert set(versions) == {1, 2, 3}, "both swaps were served"
    # Only forward: once an answer from version v has arrived, every request sent later is
    # answered by v or a newer version.
    newest = 1
    for answer in sorted(report.answers, key=lambda a: a.sent):
        seen = max(
            (a.body["model_version"] for a in answered if a.ended < answer.sent and a.body),
            default=1,
        )
        newest = max(newest, seen)
        assert answer.body is not None and answer.body["model_version"] >= newest
    switch = [
        min(a.ended for a in answered if a.body and a.body["model_version"] == v) - at
        for v, at in zip((2, 3), promoted, strict=True)
    ]
    assert all(s <= 5.0 for s in switch), switch
    metrics = httpx.get(f"{server}/metrics").text
    assert "keel_api_predictions_dropped_total 0.0" in metrics
    deadline = time.monotonic() + 20  # the writer flushes every api.log_flush_seconds
    while _logged(root) - logged_before < len(report.answers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _logged(root) - logged_before == len(report.answers)  # every prediction logged
    figures.section("load")["result"] = {
        **summary,
        "record_per_request": 1,
        "swaps": [f"v{a}->v{b}" for a, b in ((1, 2), (2, 3))],
        "seconds_to_serve_new_version": [round(s, 2) for s in switch],
        "versions_went_back": 0,
        "predictions_logged": len(report.answers),
        "server": "keel api, 1 uvicorn worker, a subprocess on 127.0.0.1",
    }


def _logged(root: Path) -> int:
    """Served predictions of the load's own record logged so far (the Schemathesis test's
    requests, on the same server, may still be flushed while the load runs)."""
    engine = create_engine(sqlite_url(root))
    with engine.connect() as conn:
        count = conn.execute(
            text(
                "SELECT count(*) FROM predictions "
                "WHERE batch_id LIKE 'api:%' AND entity_key = 'load-test'"
            )
        ).scalar_one()
    engine.dispose()
    return int(count)
