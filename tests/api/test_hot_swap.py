"""`keel api` as a real process: a promotion under load is served within 5 s, with no error
and no request scored by a mix of models."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sqlalchemy.orm import Session

from keel.config import load_params
from keel.history import with_history
from keel.model import load_bundle
from keel.registry import repository as repo
from keel.scoring import score_records
from tasks.production import load_records
from tests.api.conftest import API_KEY
from tests.api.helpers import free_port, to_records
from tests.api.project import registry_of

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int
    version: int | None
    scores: tuple[float, ...]
    versions: frozenset[int]


# The outcome history the records are scored with (the API's default is now).
AS_OF = dt.datetime(2016, 8, 12, tzinfo=dt.UTC)


@contextmanager
def keel_api(project: Path, tmp_path: Path, workers: int = 1) -> Iterator[tuple[str, Path]]:
    """`keel api` in a subprocess on a free port; yields its URL and its log file."""
    port = free_port()
    env = {
        **os.environ,
        "KEEL_API_KEYS": API_KEY,
        "KEEL_PREFECT_UI_URL": "http://127.0.0.1:4200",
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    log = tmp_path / "api.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flows.cli",
                "api",
                "--params",
                str(project / "params.yaml"),
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield base, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture()
def api_process(project: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with keel_api(project, tmp_path) as running:
        yield running


def _expected_scores(project: Path, frame: pd.DataFrame) -> dict[int, tuple[float, ...]]:
    """What each version scores for the request's records (the same function, offline)."""
    params = load_params(project / "params.yaml")
    engine, store = registry_of(project)
    expected = {}
    with Session(engine) as session:
        for version in (1, 2):
            row = repo.get_version(session, params.gate.model_name, version)
            bundle_dir = store.get_bundle(row.artifact_sha256, project / f"bundle-v{version}")
            bundle = load_bundle(bundle_dir)
            rows = with_history(
                frame, load_records(project, params), bundle.spec.history, params.data.target, AS_OF
            )
            scored = score_records(bundle, rows, threshold=params.evaluate.threshold)
            expected[version] = tuple(scored["score"].tolist())
    engine.dispose()
    assert expected[1] != expected[2]
    return expected


@pytest.mark.slow
def test_promotion_under_load_swaps_within_5_seconds_without_errors(
    api_process: tuple[str, Path], project: Path
) -> None:
    base, log = api_process
    headers = {"X-API-Key": API_KEY}
    features = httpx.get(f"{base}/v1/model", headers=headers).json()["served"]["features"]
    frame = pd.read_csv(project / "data/raw/hotel_bookings.csv.gz").iloc[:5]
    body = {
        "records": to_records(frame, features["numeric"] + features["other"]),
        "as_of": AS_OF.isoformat(),
    }
    expected = _expected_scores(project, frame)
    answers: list[Answer] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = http.post("/v1/predict", json=body)
                    status = response.status_code
                    payload = response.json() if status == 200 else {}
                except httpx.HTTPError:
                    status, payload = -1, {}
                predictions = payload.get("predictions", [])
                answers.append(
                    Answer(
                        started,
                        time.monotonic(),
                        status,
                        payload.get("model_version"),
                        tuple(p["score"] for p in predictions),
                        frozenset(p["model_version"] for p in predictions),
                    )
                )

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    params = load_params(project / "params.yaml")
    engine, _ = registry_of(project)
    with Session(engine) as session, session.begin():  # v2 is champion: bring back v1
        repo.promote(session, params.gate.model_name, 1, actor="tester", reason="hot swap test")
    promoted = time.monotonic()
    engine.dispose()
    time.sleep(7.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert len(answers) > 50, "too few requests to call it a load test"
    assert [a for a in answers if a.status != 200] == []  # zero errors
    for a in answers:  # every response names the version that scored it, and only that one
        assert a.version in (1, 2) and a.versions == {a.version}
        assert a.scores == pytest.approx(expected[a.version], abs=1e-9)
    assert {a.version for a in answers if a.ended < promoted} == {2}
    first_new = min((a for a in answers if a.version == 1), key=lambda a: a.ended)
    switch = first_new.ended - promoted
    assert switch <= 5.0, f"the new champion was served {switch:.2f} s after its promotion"
    # Atomic: once a request was answered by v1, no request started later got v2.
    assert [a for a in answers if a.started > first_new.ended and a.version == 2] == []
    assert "serving hotel-cancellations v1 (was v2)" in log.read_text()
    metrics = httpx.get(f"{base}/metrics").text
    assert 'keel_api_model_version{model="hotel-cancellations"} 1.0' in metrics


def test_keel_api_refuses_to_start_without_keys(project: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "KEEL_API_KEYS"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "api", "--params", str(project / "params.yaml")],
        cwd=REPO,
        env={**env, "KEEL_PREFECT_UI_URL": "http://127.0.0.1:4200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "no API key configured: set KEEL_API_KEYS" in done.stderr


@pytest.mark.slow
def test_metrics_add_up_across_workers(project: Path, tmp_path: Path) -> None:
    with keel_api(project, tmp_path, workers=2) as (base, _log):
        headers = {"X-API-Key": API_KEY}
        features = httpx.get(f"{base}/v1/model", headers=headers).json()["served"]["features"]
        frame = pd.read_csv(project / "data/raw/hotel_bookings.csv.gz").iloc[:2]
        body = {"records": to_records(frame, features["numeric"] + features["other"])}
        for _ in range(20):  # a new connection each time: both workers answer some
            assert httpx.post(f"{base}/v1/predict", json=body, headers=headers).is_success
        metrics = httpx.get(f"{base}/metrics").text
    assert 'keel_api_requests_total{method="POST",route="/v1/predict",status="200"} 20.0' in metrics
    assert 'keel_api_rows_scored_total{version="2"} 40.0' in metrics
    versions = [line for line in metrics.splitlines() if line.startswith("keel_api_model_version{")]
    assert len(versions) == 2 and all(line.endswith(" 2.0") for line in versions)  # per worker
