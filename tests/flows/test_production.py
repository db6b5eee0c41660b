"""score, outcomes and monitor on a small real-data project with a trained champion."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from prefect.settings import PREFECT_API_URL
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from flows.production import monitor_flow, outcomes_flow, score_flow
from flows.train import train_flow
from keel.config import load_params
from keel.history import with_history
from keel.model import load_bundle
from keel.scoring import score_records
from keel.store import Outcome, Prediction, QuarantinedRow
from tasks.production import BatchRejectedError, load_records, score_batch
from tests.conftest import make_project

pytestmark = pytest.mark.usefixtures("prefect_harness")
AS_OF = dt.datetime(2016, 7, 15, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def champion_project(
    tmp_path_factory: pytest.TempPathFactory, hotel_sample: pd.DataFrame, prefect_harness: None
) -> Path:
    root = make_project(tmp_path_factory.mktemp("prod") / "project", hotel_sample)
    assert train_flow(root=str(root))["decision"]["outcome"] == "promote"
    return root


@pytest.fixture()
def project(champion_project: Path, tmp_path: Path) -> Path:
    """A private copy (its own SQLite registry and store) of the trained project."""
    root = tmp_path / "project"
    shutil.copytree(champion_project, root)
    return root


def predictions(root: Path) -> pd.DataFrame:
    engine = create_engine(f"sqlite:///{root / '.keel/keel.db'}")
    with engine.connect() as conn:
        frame = pd.read_sql(
            text(
                "SELECT batch_id, entity_key, model_version, score, decision, reasons, scored_at"
                " FROM predictions ORDER BY batch_id, entity_key"
            ),
            conn,
        )
    engine.dispose()
    return frame


def test_score_writes_reason_codes_once(project: Path) -> None:
    first = score_flow(root=str(project), as_of=AS_OF)
    assert first["written"] > 20 and not first["skipped"]
    table = predictions(project)
    assert len(table) == first["written"]
    assert table["entity_key"].is_unique
    reasons = pd.DataFrame(json.loads(table["reasons"].iloc[0]))
    assert list(reasons.columns) == ["feature", "value", "contribution"] and len(reasons) == 3
    again = score_flow(root=str(project), as_of=AS_OF)
    assert again["skipped"] and "already scored" in again["message"]
    pd.testing.assert_frame_equal(predictions(project), table)


def test_only_open_records_of_the_period_are_scored(project: Path) -> None:
    params = load_params(project / "params.yaml")
    feed = load_records(project, params)
    score_flow(root=str(project), as_of=AS_OF)
    keys = set(predictions(project)["entity_key"])
    scored = feed[feed["booking_id"].isin(keys)]
    end = pd.Timestamp("2016-07-15")
    assert (scored["_event_time"] > end - pd.Timedelta(days=7)).all()
    assert (scored["_event_time"] <= end).all()
    assert (scored["_label_time"] > end).all()  # never a booking whose outcome is known


def test_as_made_scores_every_record_of_the_period_with_what_was_known_when_made(
    project: Path,
) -> None:
    params = load_params(project / "params.yaml")
    params = params.model_copy(
        update={"score": params.score.model_copy(update={"include_resolved": True})}
    )
    feed = load_records(project, params)
    start, end = pd.Timestamp("2016-07-08"), pd.Timestamp("2016-07-15")
    period = feed[(feed["_event_time"] > start) & (feed["_event_time"] <= end)]
    resolved = period["_label_time"] <= end
    assert resolved.sum() > 0  # the strict batch would leave these out

    result = score_batch.fn(project, params, AS_OF, records=feed)
    table = predictions(project).set_index("entity_key")
    assert result.written == len(table) == len(period)
    assert set(table.index) == set(period["booking_id"].astype(str))

    # Each record was scored with the outcome history known when it was made: the same scores
    # as the scoring function on features as of each record's event time (as the model learnt
    # them); the history does move those scores (half a year later they differ).
    bundle = load_bundle(project / "models/model")
    target = params.data.target
    when_made = with_history(period, feed, bundle.spec.history, target)
    expected = score_records(bundle, when_made, threshold=params.evaluate.threshold)
    stored = table.loc[period["booking_id"].astype(str), "score"].to_numpy()
    np.testing.assert_allclose(stored, expected["score"].to_numpy(), rtol=0, atol=1e-6)
    at_end = with_history(period, feed, bundle.spec.history, target, AS_OF + dt.timedelta(180))
    later = score_records(bundle, at_end, threshold=params.evaluate.threshold)
    assert not np.allclose(stored, later["score"].to_numpy(), rtol=0, atol=1e-6)


CRASH = textwrap.dedent(
    """
    import os, sys, datetime as dt
    import keel.store as store
    real = store._insert_sqlite
    def crash(connection, rows):
        real(connection, rows[: len(rows) // 2])   # half the batch is inside the transaction
        os._exit(17)                               # the process dies before COMMIT
    store._insert_sqlite = crash
    from flows.production import score_flow
    score_flow(root=sys.argv[1], as_of=dt.datetime(2016, 7, 15, tzinfo=dt.UTC))
    """
)


@pytest.mark.slow
def test_a_crash_mid_write_leaves_nothing_and_a_rerun_completes(
    project: Path, tmp_path: Path, champion_project: Path
) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(champion_project, reference)
    score_flow(root=str(reference), as_of=AS_OF)
    expected = predictions(reference).drop(columns=["scored_at"])

    # The child talks to this session's Prefect server; its output goes to a file, so nothing
    # it might leave behind can hold a pipe open.
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    log = tmp_path / "crash.log"
    with log.open("w") as out:
        crashed = subprocess.run(
            [sys.executable, "-c", CRASH, str(project)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
            timeout=300,
        )
    assert crashed.returncode == 17, log.read_text()[-2000:]
    assert predictions(project).empty  # the half-written batch was rolled back
    score_flow(root=str(project), as_of=AS_OF)
    pd.testing.assert_frame_equal(predictions(project).drop(columns=["scored_at"]), expected)


def _batch_source(project: Path, edit: object) -> pd.DataFrame:
    params = load_params(project / "params.yaml")
    feed = load_records(project, params)
    return edit(feed) if callable(edit) else feed


def test_bad_batches_have_clear_outcomes(project: Path) -> None:
    params = load_params(project / "params.yaml")
    feed = load_records(project, params)
    in_batch = (
        (feed["_event_time"] > pd.Timestamp("2016-07-08"))
        & (feed["_event_time"] <= pd.Timestamp("2016-07-15"))
        & (feed["_label_time"] > pd.Timestamp("2016-07-15"))
    )
    rows = feed.index[in_batch][:3]

    missing = feed.drop(columns=["adr"])
    with pytest.raises(BatchRejectedError, match="missing columns \\['adr'\\]"):
        score_batch.fn(project, params, AS_OF, records=missing)

    odd = feed.copy()
    odd["hotel"] = odd["hotel"].astype(object)
    odd.loc[rows[0], "hotel"] = "Motel"  # unseen category in a closed set
    odd.loc[rows[1], "adults"] = np.nan  # null where none is allowed
    odd.loc[rows[2], "country"] = "ATL"  # an unseen but well-formed country: scored
    result = score_batch.fn(project, params, AS_OF, records=odd)
    assert result.quarantined == 2 and result.written == in_batch.sum() - 2
    engine = create_engine(f"sqlite:///{project / '.keel/keel.db'}")
    with Session(engine) as s:
        held = {q.entity_key: q.reasons for q in s.scalars(select(QuarantinedRow))}
        scored = set(s.scalars(select(Prediction.entity_key)))
    engine.dispose()
    assert held[odd.loc[rows[0], "booking_id"]] == [
        "expect_column_values_to_be_in_set on column 'hotel'"
    ]
    assert "adults" in held[odd.loc[rows[1], "booking_id"]][0]
    assert odd.loc[rows[2], "booking_id"] in scored

    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    with pytest.raises(BatchRejectedError, match="is in the future"):
        score_batch.fn(project, params, future, records=feed)
    empty = score_batch.fn(project, params, dt.datetime(2010, 1, 1, tzinfo=dt.UTC), records=feed)
    assert empty.written == 0 and "nothing to score" in empty.message


def _open_rows(feed: pd.DataFrame) -> pd.Index:
    end = pd.Timestamp("2016-07-15")
    in_batch = (
        (feed["_event_time"] > end - pd.Timedelta(days=7))
        & (feed["_event_time"] <= end)
        & (feed["_label_time"] > end)
    )
    return feed.index[in_batch]


def test_reject_policy_rejects_the_whole_batch(project: Path) -> None:
    params = load_params(project / "params.yaml")
    score_cfg = params.score.model_copy(update={"invalid_rows": "reject"})
    params = params.model_copy(update={"score": score_cfg})
    feed = load_records(project, params)
    feed["hotel"] = feed["hotel"].astype(object)
    feed.loc[_open_rows(feed)[0], "hotel"] = "Motel"
    with pytest.raises(BatchRejectedError, match="'hotel'"):
        score_batch.fn(project, params, AS_OF, records=feed)
    assert predictions(project).empty


def test_outcomes_ignore_duplicates_and_count_never_scored(project: Path) -> None:
    score_flow(root=str(project), as_of=AS_OF)
    first = outcomes_flow(root=str(project), as_of=dt.datetime(2016, 9, 1, tzinfo=dt.UTC))
    assert first["new"] == first["known"] > 0
    assert 0 < first["never_scored"] < first["new"]
    again = outcomes_flow(root=str(project), as_of=dt.datetime(2016, 9, 1, tzinfo=dt.UTC))
    assert again["new"] == 0
    engine = create_engine(f"sqlite:///{project / '.keel/keel.db'}")
    with Session(engine) as s:
        assert len(s.scalars(select(Outcome.entity_key)).all()) == first["known"]
    engine.dispose()


def test_monitor_measures_accuracy_and_drift(project: Path) -> None:
    for day in (1, 8, 15, 22):
        score_flow(root=str(project), as_of=dt.datetime(2016, 7, day, tzinfo=dt.UTC))
    outcomes_flow(root=str(project), as_of=dt.datetime(2016, 10, 1, tzinfo=dt.UTC))
    params_path = project / "params.yaml"
    text_params = params_path.read_text().replace("min_rows: 200", "min_rows: 20")
    params_path.write_text(text_params)
    result = monitor_flow(root=str(project), as_of=dt.datetime(2016, 7, 22, tzinfo=dt.UTC))
    # Only outcomes known by the monitoring date count (the rest arrive later).
    assert result["rows"] > 100 and 20 <= result["labelled"] < result["rows"]
    assert 0.5 < result["metrics"]["roc_auc"] <= 1
    assert "lead_time" in result["drift"] and "__score__" in result["drift"]
    assert not set(result["drift"]) & {"arrival_date_week_number", "arrival_date_month"}


def test_monitor_counts_each_record_once(project: Path) -> None:
    # Overlapping batches score some bookings twice; the monitor keeps the latest prediction.
    score_flow(root=str(project), as_of=dt.datetime(2016, 7, 15, tzinfo=dt.UTC))
    score_flow(root=str(project), as_of=dt.datetime(2016, 7, 18, tzinfo=dt.UTC))
    table = predictions(project)
    assert table["entity_key"].duplicated().any()
    result = monitor_flow(root=str(project), as_of=dt.datetime(2016, 7, 18, tzinfo=dt.UTC))
    assert result["rows"] == table["entity_key"].nunique()


def test_monitor_labels_its_events_due_or_cooldown(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The retrain automation matches events labelled "due" only: those the monitor emits
    # within the cooldown of the last retraining say "cooldown" and start no run.
    from flows import production
    from keel.registry import repository as repo
    from tasks.registry import open_registry

    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr(production, "emit_event", lambda **event: emitted.append(event))
    for day in (1, 8, 15, 22):
        score_flow(root=str(project), as_of=dt.datetime(2016, 7, day, tzinfo=dt.UTC))
    outcomes_flow(root=str(project), as_of=dt.datetime(2016, 10, 1, tzinfo=dt.UTC))
    params_path = project / "params.yaml"
    raw = yaml.safe_load(params_path.read_text())
    raw["monitor"].update(min_rows=20, min_roc_auc=0.99)  # every verdict: degraded
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cooldown = load_params(params_path).retrain.cooldown_days
    when = dt.datetime(2016, 7, 22, tzinfo=dt.UTC)

    first = monitor_flow(root=str(project), as_of=when)
    assert first["degraded"] and first["retrain"] == "due"  # never retrained
    assert emitted and all(e["resource"]["keel.retrain"] == "due" for e in emitted)

    registry = open_registry(project)
    name = load_params(params_path).gate.model_name
    last = when - dt.timedelta(days=cooldown - 1)  # a retraining a day short of the cooldown
    with registry.session() as session, session.begin():
        repo.record_event(
            session,
            name,
            None,
            "retrain",
            actor="test",
            reason="",
            metrics={"as_of": last.isoformat()},
        )
    registry.engine.dispose()
    emitted.clear()
    inside = monitor_flow(root=str(project), as_of=when)
    assert inside["retrain"] == "cooldown"
    assert emitted and all(e["resource"]["keel.retrain"] == "cooldown" for e in emitted)

    # A day later the cooldown is over: the same events are due again.
    emitted.clear()
    after = monitor_flow(root=str(project), as_of=when + dt.timedelta(days=1))
    assert after["retrain"] == "due" and emitted


@pytest.mark.parametrize(
    "as_of, last_day",
    [("2016-10-01T00:00:00+00:00", "2016-09-30"), ("2016-10-01T06:00:00+00:00", "2016-09-30")],
)
def test_retraining_never_sees_past_as_of(project: Path, as_of: str, last_day: str) -> None:
    from flows.production import params_for_retrain

    params = load_params(project / "params.yaml")
    split = params_for_retrain(params, project, dt.datetime.fromisoformat(as_of)).featurize.split
    assert split.holdout_end.isoformat() == last_day and split.holdout_labels_known
    assert split.cutoff < split.holdout_end


def _with_gate(project: Path, refit: bool = True, **gate: float) -> None:
    """Set `retrain.refit` and these gate settings."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["gate"].update(gate)
    params["retrain"]["refit"] = refit
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_a_passing_candidate_is_refit_with_its_gate_window(project: Path) -> None:
    """retrain.refit: the gated candidate's verdict goes to a refit that learnt the window too."""
    from flows.production import retrain_flow
    from keel.registry import repository as repo
    from tasks.registry import open_registry

    # A gate every candidate passes: this test is about what follows a pass.
    _with_gate(project, min_improvement=0.0, max_slice_drop=1.0, max_calibration_worsening=1.0)
    as_of = dt.datetime(2016, 10, 1, tzinfo=dt.UTC)
    result = retrain_flow(root=str(project), as_of=as_of, reason="test")
    candidate, refit = result["candidate"], result["version"]
    assert result["decision"]["outcome"] == "promote" and refit == candidate + 1

    registry = open_registry(project)
    name = load_params(project / "params.yaml").gate.model_name
    with registry.session() as session:
        gated, final = (
            repo.get_version(session, name, candidate),
            repo.get_version(session, name, refit),
        )
        champion = repo.get_alias(session, name, "champion")
        events = [(e.version, e.event) for e in repo.audit_log(session, name)]
    registry.engine.dispose()
    assert champion is not None and champion.version == refit
    assert (gated.gate_outcome, final.gate_outcome) == ("refit", "promote")
    assert final.gate_decision["refit_of"] == candidate
    assert events[-4:] == [
        (candidate, "evaluated"),
        (refit, "registered"),
        (candidate, "refit"),
        (refit, "promoted"),
    ]
    # The refit learnt the 4 weeks the candidate was gated on, and nothing known after as_of.
    known_by = {
        row.version: dt.date.fromisoformat(row.training_window["labels_known_by"])
        for row in (gated, final)
    }
    assert known_by == {candidate: dt.date(2016, 9, 2), refit: dt.date(2016, 9, 30)}
    assert pd.Timestamp(final.training_window["order_time_max"]) < pd.Timestamp("2016-09-30")
    assert pd.Timestamp(final.training_window["order_time_max"]) >= pd.Timestamp("2016-09-02")
    # It has no holdout of its own: it carries the candidate's metrics, and says so.
    assert final.metrics["holdout"] == gated.metrics["holdout"]
    assert final.metrics["measured_on"]["version"] == candidate
    from flows.production import params_for_retrain
    from tasks import stages

    refit_params = params_for_retrain(
        load_params(project / "params.yaml"), project, as_of, refit=True
    )
    with pytest.raises(stages.StageError, match="no holdout"):
        stages.evaluate.fn(project / ".keel/retrain/20161001T000000/refit", refit_params)
    # The dashboard's card of the refit says both.
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from keel.serving.app import _TEMPLATES
    from keel.serving.holder import model_card

    env = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(["html"]))
    card = env.from_string('{% from "_card.html" import model_card %}{{ model_card(c) }}')
    html = card.render(c=model_card(final))
    assert f"(refit of v{candidate}, which the gate judged)" in html
    assert f"holdout metrics of v{candidate} on its gate window; this refit also learnt it" in html


@pytest.mark.slow
def test_a_rejected_candidate_is_not_refit(project: Path) -> None:
    from flows.production import retrain_flow

    _with_gate(project, min_improvement=1.0)  # no candidate can gain a whole AUC point
    result = retrain_flow(root=str(project), as_of=dt.datetime(2016, 10, 1, tzinfo=dt.UTC))
    assert result["decision"]["outcome"] == "reject"
    assert result["version"] == result["candidate"]


@pytest.mark.slow
def test_without_refit_the_gated_candidate_itself_is_promoted(project: Path) -> None:
    from flows.production import retrain_flow
    from keel.registry import repository as repo
    from tasks.registry import open_registry

    _with_gate(project, refit=False, min_improvement=0.0, max_slice_drop=1.0)
    cache_setting = os.environ.get("KEEL_CACHE_DIR")
    result = retrain_flow(root=str(project), as_of=dt.datetime(2016, 10, 1, tzinfo=dt.UTC))
    # The validation cache is the project's, and the process's environment is left alone
    # (a flow that set KEEL_CACHE_DIR once redirected every later cache of the process).
    assert os.environ.get("KEEL_CACHE_DIR") == cache_setting
    shared = project / ".keel/retrain/20161001T000000/.keel/cache"
    assert shared.resolve() == (project / ".keel/cache").resolve()
    assert any((project / ".keel/cache/validate").iterdir())
    assert result["decision"]["outcome"] == "promote"
    assert result["version"] == result["candidate"]
    registry = open_registry(project)
    with registry.session() as session:
        champion = repo.get_alias(
            session, load_params(project / "params.yaml").gate.model_name, "champion"
        )
    registry.engine.dispose()
    assert champion is not None and champion.version == result["candidate"]
