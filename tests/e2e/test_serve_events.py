"""A real Prefect server, `keel serve`, and retraining started by emitted drift events.

The test starts a Prefect server (as `keel server start` runs it) on a free port with a
temporary PREFECT_HOME, trains a champion against it, serves the deployments, emits one
`keel.drift.detected` event and checks that the automation created a retraining run that
completed and registered a new version; then it emits 10 events within 5 seconds and checks
that exactly one more retraining ran.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from keel.registry.models import ModelVersion
from tests.conftest import make_project
from tests.e2e.conftest import api, wait_until

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent

EMIT = """
import sys, time
from prefect.events import emit_event
from prefect.events.clients import get_events_client
count, as_of, pause = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
for _ in range(count):
    emit_event(
        event="keel.drift.detected",
        # As the monitor labels an event outside the retraining cooldown.
        resource={"prefect.resource.id": "keel.model.hotel-serve", "keel.retrain": "due"},
        payload={"model": "hotel-serve", "as_of": as_of, "features": [{"psi": 1.2}]},
    )
    time.sleep(pause)
from prefect.events.worker import EventsWorker
EventsWorker.drain_all()
"""


def _retrain_runs(env: dict[str, str]) -> list[dict[str, object]]:
    return api(
        env,
        "/flow_runs/filter",
        {"deployments": {"name": {"any_": ["retrain"]}}, "sort": "EXPECTED_START_TIME_ASC"},
    )


def _versions(root: Path) -> int:
    engine = create_engine(f"sqlite:///{root / '.keel/keel.db'}")
    with Session(engine) as s:
        count = s.scalar(select(func.count()).select_from(ModelVersion)) or 0
    engine.dispose()
    return count


def test_drift_events_start_exactly_one_retraining_each_storm(
    prefect_server: dict[str, str], tmp_path: Path, hotel_sample: pd.DataFrame
) -> None:
    env = prefect_server
    root = make_project(tmp_path / "project", hotel_sample)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["gate"]["model_name"] = "hotel-serve"
    params["gate"]["min_improvement"] = 0.0
    params["retrain"]["trigger_within_seconds"] = 15
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    keel = str(BIN / "keel")
    trained = subprocess.run([keel, "train"], cwd=root, env=env, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert _versions(root) == 1

    serve_log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [keel, "serve"],
        cwd=root,
        env=env,
        stdout=serve_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: len(api(env, "/deployments/filter", {})) == 4, 90, "the four deployments"
        )
        automations = api(env, "/automations/filter", {})
        assert any("retrain hotel-serve" in str(a["name"]) for a in automations)
        deployments = {d["name"]: d for d in api(env, "/deployments/filter", {})}
        assert {"score", "outcomes", "monitor", "retrain"} == set(deployments)
        assert deployments["score"]["schedules"], "score must run on a schedule"

        emit = [sys.executable, "-c", EMIT]
        subprocess.run([*emit, "1", "2016-10-01T00:00:00+00:00", "0"], env=env, check=True)
        first_emitted = time.monotonic()  # the event occurred before this
        wait_until(lambda: len(_retrain_runs(env)) >= 1, 60, "a retraining run")
        wait_until(
            lambda: _retrain_runs(env)[0]["state_type"] in {"COMPLETED", "FAILED", "CRASHED"},
            240,
            "the retraining to finish",
        )
        first = _retrain_runs(env)[0]
        assert first["state_type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-4000:]
        assert first["parameters"]["as_of"] == "2016-10-01T00:00:00+00:00"
        assert _versions(root) == 2

        # Prefect's reactive trigger ignores events for `within` (15 s) after it fires, in
        # windows aligned to the first event: after a firing at S the next window is
        # [S+15, S+30) and an event in it fires again. A storm that starts after S+30 and
        # lasts less than 15 s therefore starts exactly one run.
        time.sleep(max(0.0, first_emitted + 2 * 15 + 2 - time.monotonic()))
        subprocess.run([*emit, "10", "2016-12-15T00:00:00+00:00", "0.45"], env=env, check=True)
        wait_until(lambda: len(_retrain_runs(env)) >= 2, 60, "the second retraining run")
        wait_until(
            lambda: all(
                r["state_type"] in {"COMPLETED", "FAILED", "CRASHED"} for r in _retrain_runs(env)
            ),
            240,
            "the second retraining to finish",
        )
        time.sleep(10)  # any extra run would have been created by now
        runs = _retrain_runs(env)
        assert len(runs) == 2, json.dumps([r["state_type"] for r in runs])
        assert runs[1]["state_type"] == "COMPLETED"
        assert _versions(root) == 3
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        serve_log.close()
