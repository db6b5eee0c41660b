"""An event storm against a real Prefect server and `keel serve`.

100 `keel.drift.detected` events within 10 seconds start exactly one retraining; the
retraining emits no drift event of its own; a retraining forced by hand inside the cooldown
exits with 'skipped: cooldown'; 20 events labelled "cooldown" (as the monitor labels those
inside the cooldown) start no run; a second storm of 100 events after the cooldown (in logical
time) starts exactly one more.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from keel.registry.models import AuditEvent, ModelVersion
from tests.e2e.conftest import api, wait_until
from tests.reliability.conftest import Figures, copy_project, sqlite_url

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
EVENTS = 100
WITHIN = 15  # retrain.trigger_within_seconds: longer than a storm, short for a test

EMIT = """
import json, sys, time
from prefect.events import emit_event
from prefect.events.worker import EventsWorker
model, as_ofs, pause = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
label = sys.argv[4]
first = time.monotonic()
for as_of in as_ofs:
    emit_event(
        event="keel.drift.detected",
        resource={"prefect.resource.id": f"keel.model.{model}", "keel.retrain": label},
        payload={"model": model, "as_of": as_of, "features": [{"feature": "x", "psi": 1.2}]},
    )
    last = time.monotonic()
    time.sleep(pause)
EventsWorker.drain_all()
print(f"storm seconds {last - first:.3f}")
"""


def _storm(env: dict[str, str], model: str, as_ofs: list[str], label: str = "due") -> float:
    """Emit one event per as_of within 10 s; returns the seconds from the first to the last.

    `label` is the `keel.retrain` label the monitor would give them ("due" or "cooldown").
    """
    pause = str(8.0 / len(as_ofs))
    done = subprocess.run(
        [sys.executable, "-c", EMIT, model, json.dumps(as_ofs), pause, label],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    return float(done.stdout.split("storm seconds")[-1])


def _runs(env: dict[str, str]) -> list[dict[str, object]]:
    return api(
        env,
        "/flow_runs/filter",
        {"deployments": {"name": {"any_": ["retrain"]}}, "sort": "EXPECTED_START_TIME_ASC"},
    )


def _events(env: dict[str, str], name: str) -> int:
    body = {"filter": {"event": {"name": [name]}}, "limit": 1}
    response = api(env, "/events/filter", body)
    return int(response["total"])  # type: ignore[call-overload]


def _finished(env: dict[str, str]) -> bool:
    return all(r["state_type"] in {"COMPLETED", "FAILED", "CRASHED"} for r in _runs(env))


def _registry(root: Path) -> tuple[int, int]:
    """(versions, retrainings recorded in the audit log)."""
    engine = create_engine(sqlite_url(root))
    with Session(engine) as s:
        versions = s.scalar(select(func.count()).select_from(ModelVersion)) or 0
        retrains = (
            s.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.event == "retrain")
            )
            or 0
        )
    engine.dispose()
    return versions, retrains


def test_event_storms_start_exactly_one_retraining_each(
    prefect_server: dict[str, str], champion: Path, tmp_path: Path, figures: Figures
) -> None:
    env = {**prefect_server, "OMP_WAIT_POLICY": "PASSIVE"}
    root = copy_project(champion, tmp_path / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["retrain"]["trigger_within_seconds"] = WITHIN
    params["retrain"]["cooldown_days"] = 28
    params["gate"]["min_improvement"] = 0.0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    model = params["gate"]["model_name"]
    assert _registry(root) == (1, 0)

    serve_log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [str(BIN / "keel"), "serve"],
        cwd=root,
        env=env,
        stdout=serve_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(lambda: len(api(env, "/deployments/filter", {})) == 4, 120, "the deployments")
        # `keel serve` creates the retrain automation after the deployments.
        wait_until(lambda: len(api(env, "/automations/filter", {})) >= 1, 60, "the automation")

        # Storm 1: 100 events in under 10 s, their as_of spread over 20 days (all inside one
        # cooldown), so even a second firing could not retrain twice.
        first = [f"2016-10-{1 + i % 20:02d}T00:00:00+00:00" for i in range(EVENTS)]
        first[0] = "2016-10-01T00:00:00+00:00"
        fired_at = time.monotonic()
        took_1 = _storm(env, model, first)
        assert took_1 < 10, f"the storm took {took_1:.1f} s"
        wait_until(lambda: _events(env, "keel.drift.detected") == EVENTS, 60, "100 events stored")
        wait_until(lambda: len(_runs(env)) >= 1, 90, "a retraining run")
        wait_until(lambda: _finished(env), 300, "the retraining to finish")
        time.sleep(10)  # any extra run would have been created by now
        runs = _runs(env)
        log = (tmp_path / "serve.log").read_text()
        assert len(runs) == 1, [r["state_type"] for r in runs]
        assert runs[0]["state_type"] == "COMPLETED", log[-4000:]
        # The run carries the as_of of the event that fired the trigger: one of this storm's.
        # Before the test waited for the automation (only for the deployments), the storm's
        # first events could come before it existed: the trigger fired on as_of 2016-10-02
        # in one run and 2016-10-19 in another.
        assert runs[0]["parameters"]["as_of"] in first  # type: ignore[index]
        assert _registry(root) == (2, 1)
        # The retraining registered and gated a model but emitted no drift event.
        assert _events(env, "keel.drift.detected") == EVENTS
        assert _events(env, "keel.performance.degraded") == 0
        assert _events(env, "keel.model.registered") == 1

        # A retraining forced by hand a week later (logical time) is inside the cooldown.
        forced = subprocess.run(
            [str(BIN / "keel"), "retrain", "--as-of", "2016-10-08"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert forced.returncode == 0, forced.stderr[-3000:]
        status = json.loads(forced.stdout[forced.stdout.index("{") :])["status"]
        assert status.startswith("skipped: cooldown"), status
        assert _registry(root) == (2, 1)

        # After the trigger's aligned quiet window (real time: a window opened at S covers
        # [S + w, S + 2w)), events the monitor labelled "cooldown" start no run.
        time.sleep(max(0.0, fired_at + 2 * WITHIN + 2 - time.monotonic()))
        took_quiet = _storm(env, model, ["2016-10-20T00:00:00+00:00"] * 20, label="cooldown")
        wait_until(
            lambda: _events(env, "keel.drift.detected") == EVENTS + 20, 60, "120 events stored"
        )
        time.sleep(10)  # a run would have been created by now
        assert len(_runs(env)) == 1, "events labelled 'cooldown' started a run"

        # Storm 2, after the cooldown (logical time).
        second = ["2016-12-15T00:00:00+00:00"] * EVENTS
        took_2 = _storm(env, model, second)
        assert took_2 < 10, f"the storm took {took_2:.1f} s"
        wait_until(lambda: len(_runs(env)) >= 2, 90, "the second retraining run")
        wait_until(lambda: _finished(env), 300, "the second retraining to finish")
        time.sleep(10)
        runs = _runs(env)
        assert len(runs) == 2, [r["state_type"] for r in runs]
        assert runs[1]["state_type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-4000:]
        assert _registry(root) == (3, 2)
        total = 2 * EVENTS + 20
        wait_until(lambda: _events(env, "keel.drift.detected") == total, 60, "all events stored")
        time.sleep(3)
        assert _events(env, "keel.drift.detected") == total  # none from the retrainings
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        serve_log.close()
    figures.section("events")["storm"] = {
        "storms": 2,
        "events_per_storm": EVENTS,
        "storm_seconds": [round(took_1, 2), round(took_2, 2)],
        "events_stored": 2 * EVENTS + 20,
        "cooldown_labelled_events": 20,
        "runs_started_by_cooldown_labelled_events": 0,
        "cooldown_labelled_storm_seconds": round(took_quiet, 2),
        "retrainings_started": 2,
        "forced_inside_cooldown": status,
        "drift_events_emitted_by_retrainings": 0,
        "trigger_within_seconds": WITHIN,
        "cooldown_days": 28,
    }
