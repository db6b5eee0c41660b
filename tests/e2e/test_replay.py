"""A short replay through a real Prefect server, its automation and the retrain deployments.

Eight simulated weeks on the 8 % sample: the `keel` strategy may only retrain through the
event -> automation -> deployment path, `scheduled` every three steps, `static` never; the
store must show the leakage-free protocol (every record scored before its outcome was known,
in the step it was made), and a second run must give the same figures.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from sqlalchemy import create_engine, text

from keel.config import load_params
from tasks.production import load_records
from tests.conftest import make_project
from tests.e2e.conftest import api

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
START, END = "2016-07-01", "2016-08-19"


def _replay(root: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "keel"), "replay", "--start", START, "--end", END, "--step", "7d"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    summary: dict[str, Any] = json.loads((root / "reports/replay/summary.json").read_text())
    return summary


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("months", "retrainings", "promotions", "rejections", "scored")
    return {name: {k: s[k] for k in keep} for name, s in summary["strategies"].items()}


def _store(root: Path, strategy: str, sql: str) -> pd.DataFrame:
    engine = create_engine(f"sqlite:///{root / '.keel/replay' / strategy / '.keel/keel.db'}")
    with engine.connect() as connection:
        frame = pd.read_sql(text(sql), connection)
    engine.dispose()
    return frame


def test_short_replay_through_the_server(
    prefect_server: dict[str, str], tmp_path: Path, hotel_sample: pd.DataFrame
) -> None:
    root = make_project(tmp_path / "project", hotel_sample)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["monitor"]["min_rows"] = 20  # about 100 bookings a week in the sample
    params["monitor"]["min_roc_auc"] = 0.99  # every verdict is "degraded": events every step
    params["retrain"]["cooldown_days"] = 14
    params["replay"] = {"scheduled_every_steps": 3}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    summary = _replay(root, prefect_server)
    strategies = summary["strategies"]
    assert set(strategies) == {"static", "scheduled", "keel"}
    for result in strategies.values():
        assert [m["month"] for m in result["months"]] == ["2016-07", "2016-08"]
        assert all(m["rows"] > 50 and 0.5 < m["roc_auc"] <= 1 for m in result["months"])
    assert strategies["static"]["retrainings"] == []
    assert strategies["scheduled"]["retrainings"] == ["2016-07-22", "2016-08-12"]
    keel = strategies["keel"]["retrainings"]
    # Events every step, cooldown 14 days from the initial training at the start.
    assert keel == ["2016-07-15", "2016-07-29", "2016-08-12"]
    for name in ("report.html", "chart.png", "summary.json"):
        assert (root / "reports/replay" / name).stat().st_size > 1000

    # keel retrained only through the automation: every run of its deployment was started by
    # an event, and those that retrained are exactly the summary's dates.
    runs = api(
        prefect_server,
        "/flow_runs/filter",
        {"deployments": {"name": {"any_": ["replay-keel"]}}},
    )
    assert runs and all(str(r["parameters"]["reason"]).startswith("keel.") for r in runs)
    assert all(r["state_type"] == "COMPLETED" for r in runs), [r["state_type"] for r in runs]
    # Events inside the cooldown are labelled so and start no run: one run per retraining.
    started = sorted(str(r["parameters"]["as_of"])[:10] for r in runs)
    assert started == keel
    model = load_params(root / ".keel/replay/keel/params.yaml").gate.model_name
    degraded = api(
        prefect_server,
        "/events/filter",
        {
            "filter": {
                "event": {"name": ["keel.performance.degraded"]},
                "resource": {"id": [f"keel.model.{model}"]},
            },
            "limit": 50,
        },
    )
    labels = [e["resource"]["keel.retrain"] for e in degraded["events"]]
    assert labels.count("due") == len(keel) and labels.count("cooldown") >= 3, labels
    scheduled_runs = api(
        prefect_server, "/flow_runs/filter", {"flow_runs": {"name": {"like_": "scheduled retrain"}}}
    )
    assert sorted(str(r["parameters"]["as_of"])[:10] for r in scheduled_runs) == [
        "2016-07-22",
        "2016-08-12",
    ]

    # The protocol, read back from the store: each booking scored once, in the step it was
    # made, before its outcome was known (the first batch takes over every booking still open
    # at the start; later ones score every booking made in the step, each with what was known
    # when it was made: `replay.score_as_made`).
    own = load_params(root / ".keel/replay/keel/params.yaml")
    feed = load_records(root / ".keel/replay/keel", own)
    made = feed.set_index(feed["booking_id"].astype(str))["_event_time"]
    scored = _store(
        root,
        "keel",
        "SELECT p.entity_key, p.as_of, o.observed_at FROM predictions p "
        "JOIN outcomes o ON o.entity_key = p.entity_key",
    )
    as_of = pd.to_datetime(scored["as_of"]).dt.tz_localize(None)
    observed = pd.to_datetime(scored["observed_at"]).dt.tz_localize(None)
    event = pd.Series(made.reindex(scored["entity_key"]).to_numpy(), index=scored.index)
    later = as_of > pd.Timestamp(START)
    assert (event[~later] <= pd.Timestamp(START)).all()  # the backlog: made before the start
    assert (observed[~later] > pd.Timestamp(START)).all()  # ... and still open then
    assert (event[later] > as_of[later] - pd.Timedelta(days=7)).all()  # made in its step
    assert (event[later] <= as_of[later]).all()
    assert (observed[later] <= as_of[later]).any()  # resolved within their step: scored too
    assert (event <= observed).all()  # (features as of the booking's day: tests/flows)
    assert scored["entity_key"].is_unique  # each booking is scored once

    # A model registered as of T learned only from labels known at T.
    versions = _store(root, "keel", "SELECT version, training_window, params FROM model_versions")
    for window, version_params in zip(versions["training_window"], versions["params"], strict=True):
        split = json.loads(version_params)["featurize"]["split"]
        as_of_day = dt.date.fromisoformat(split["holdout_end"]) + dt.timedelta(days=1)
        assert dt.date.fromisoformat(json.loads(window)["labels_known_by"]) < as_of_day

    # Running it again gives the same figures.
    again = _replay(root, prefect_server)
    assert _figures(again) == _figures(summary)
