"""Fault injection: processes killed with SIGKILL at random points, a database connection
dropped in the middle of a write. After each, nothing is lost, duplicated or half-visible.

The `score` and `train` flows run in real processes forked from a warm parent (see
zygote.py) against this session's Prefect server; the test picks each kill point at random
(seeded) among checkpoints that cover every phase, waits for the child to reach it, and
kills it with SIGKILL, then checks the database and the artifact store before the next run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
import yaml
from prefect import flow
from prefect.settings import PREFECT_API_URL
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from keel.config import load_params
from keel.db import open_database
from keel.layout import ProjectPaths
from keel.model import load_bundle
from keel.registry import repository as repo
from keel.registry.store import ArtifactStore
from tasks.production import score_batch
from tasks.registry import apply_decision, register_model
from tests.reliability.conftest import PG_ADMIN, Figures, copy_project, sqlite_url
from tests.reliability.forks import Zygote, kill, wait_for_marker

pytestmark = pytest.mark.slow
UTC = dt.UTC
AS_OFS = [dt.datetime(2016, 7, d, tzinfo=UTC).isoformat() for d in (8, 15, 22, 29)]
SEED = 20261123
KILLS = 20

# Score checkpoints: how often a run passes each (every batch, or only batches not yet
# stored), and whether the cached scores must be cleared for the run to reach it.
SCORE_POINTS: dict[str, str] = {
    "open-registry": "every batch",
    "validate-batch": "unstored",
    "load-model": "unscored",
    "scored-chunk": "unscored",
    "write-begun": "unstored",
    "half-inserted": "unstored",
    "before-commit": "unstored",
    "after-commit": "every batch",
    "between-flows": "every batch",
}


def predictions(root: Path) -> pd.DataFrame:
    engine = create_engine(sqlite_url(root))
    with engine.connect() as conn:
        frame = pd.read_sql(
            text(
                "SELECT p.batch_id, p.entity_key, p.model_version, p.score, p.decision,"
                " p.reasons, p.as_of, b.rows, b.quarantined FROM predictions p"
                " JOIN score_batches b ON b.batch_id = p.batch_id"
                " ORDER BY p.batch_id, p.entity_key"
            ),
            conn,
        )
        batches = conn.execute(text("SELECT batch_id, rows FROM score_batches")).all()
    engine.dispose()
    counts = frame.groupby("batch_id").size().to_dict()
    for batch_id, rows in batches:  # a stored batch is complete: never a part of one
        assert counts.get(batch_id, 0) == rows, f"{batch_id}: {counts.get(batch_id)} of {rows}"
    assert not frame.duplicated(["batch_id", "entity_key"]).any()
    return frame


@pytest.fixture(scope="module")
def projects(champion: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("faults")
    trained = copy_project(champion, base / "train")
    raw = yaml.safe_load((trained / "params.yaml").read_text())
    raw["train"]["seed"] = 7  # another model than the champion: a real new version
    raw["gate"]["min_improvement"] = 0.0
    (trained / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return {
        "reference": copy_project(champion, base / "reference"),
        "killed": copy_project(champion, base / "killed"),
        "train": trained,
    }


@pytest.fixture(scope="module")
def zygote(projects: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    env = {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    log = tmp_path_factory.mktemp("zygote") / "zygote.log"
    parent = Zygote(env, [projects["reference"], projects["killed"]], log)
    yield parent
    parent.close()


def _run_to_end(zygote: Zygote, job: str, args: dict[str, Any], log: Path) -> None:
    pid = zygote.fork(job, args, log)
    status = zygote.wait(pid, 600)
    assert status == {"status": "exited", "code": 0}, log.read_text()[-3000:]


def _stored(root: Path) -> int:
    engine = create_engine(sqlite_url(root))
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM score_batches")).scalar_one()
    engine.dispose()
    return int(count)


def test_score_killed_at_20_random_points_ends_identical(
    projects: dict[str, Path], zygote: Zygote, tmp_path: Path, figures: Figures
) -> None:
    reference, killed = projects["reference"], projects["killed"]
    args = {"as_ofs": AS_OFS}
    _run_to_end(zygote, "score", {**args, "root": str(reference)}, tmp_path / "reference.log")
    expected = predictions(reference)
    assert expected["batch_id"].nunique() == len(AS_OFS)

    rng = random.Random(SEED)
    # Every checkpoint twice, then two more at random, in a random order.
    plan = [*SCORE_POINTS, *SCORE_POINTS, *rng.sample(list(SCORE_POINTS), KILLS - 18)]
    rng.shuffle(plan)
    kills: list[dict[str, Any]] = []
    state = ProjectPaths(killed).state_dir
    scores_cache = state / "cache" / "scores"
    clean_db = tmp_path / "clean.db"
    with sqlite3.connect(state / "keel.db") as live, sqlite3.connect(clean_db) as copy:
        live.backup(copy)  # the WAL included
    for point in plan:
        unstored = len(AS_OFS) - _stored(killed)
        if not unstored and SCORE_POINTS[point] != "every batch":
            # Every batch is stored and this point is on the write path: a new day, the same
            # batches again on a clean store (the checks below compare with the reference).
            for suffix in ("", "-wal", "-shm"):
                Path(f"{state / 'keel.db'}{suffix}").unlink(missing_ok=True)
            shutil.copy(clean_db, state / "keel.db")
            unstored = len(AS_OFS)
        hits = len(AS_OFS) if SCORE_POINTS[point] == "every batch" else unstored
        hit = rng.randint(1, hits)
        if SCORE_POINTS[point] == "unscored":
            shutil.rmtree(scores_cache, ignore_errors=True)  # so the run scores again
        marker = tmp_path / f"kill-{len(kills)}.marker"
        log = tmp_path / f"kill-{len(kills)}.log"
        pid = zygote.fork(
            "score",
            {**args, "root": str(killed)},
            log,
            checkpoint={"name": point, "hit": hit},
            marker=marker,
        )
        reached = wait_for_marker(marker, pid, zygote, timeout=300)
        assert reached == f"{point} {hit}", f"{point} {hit}: {log.read_text()[-3000:]}"
        kill(pid)
        assert zygote.wait(pid, 30) == {"status": "killed", "signal": 9}
        table = predictions(killed)  # complete batches only, no duplicates
        for batch_id, part in table.groupby("batch_id"):
            want = expected[expected["batch_id"] == batch_id].reset_index(drop=True)
            pd.testing.assert_frame_equal(part.reset_index(drop=True), want)
        kills.append(
            {"point": point, "hit": hit, "stored_batches": int(table["batch_id"].nunique())}
        )
    assert len(kills) == KILLS and set(SCORE_POINTS) <= {k["point"] for k in kills}

    _run_to_end(zygote, "score", {**args, "root": str(killed)}, tmp_path / "final.log")
    pd.testing.assert_frame_equal(predictions(killed), expected)  # no gap, no duplicate
    figures.section("kills")["score"] = {
        "kills": len(kills),
        "survived": len(kills),
        "batches": len(AS_OFS),
        "predictions": len(expected),
        "points": sorted({k["point"] for k in kills}),
        "sequence": kills,
        "seed": SEED,
    }


def _objects_intact(root: Path) -> int:
    """Every stored object's bytes match its name (sha256); returns how many there are."""
    objects = ProjectPaths(root).state_dir / "artifacts" / "objects"
    count = 0
    for path in objects.rglob("*"):
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path
            count += 1
    return count


def _registry_state(root: Path) -> dict[str, Any]:
    engine = open_database(sqlite_url(root))
    store = ArtifactStore(str(ProjectPaths(root).state_dir / "artifacts"))
    params = load_params(root / "params.yaml")
    name = params.gate.model_name
    with Session(engine) as s:
        versions = repo.list_versions(s, name)
        champion = repo.get_alias(s, name, "champion")
        registered = [e.version for e in repo.audit_log(s, name) if e.event == "registered"]
        state = {
            "versions": [(v.version, v.gate_outcome) for v in versions],
            "champion": champion.version if champion else None,
        }
        assert registered == [v.version for v in versions]  # each version audited, once
        for v in versions:  # every registered version is complete and verifies
            store.verify_bundle(v.artifact_sha256, label=f"v{v.version}")
    engine.dispose()
    return state


def _model_loadable(root: Path) -> None:
    """The model folder is a complete bundle (old or new), never a half-written one."""
    model_dir = ProjectPaths(root).model_dir
    files = {p.name for p in model_dir.iterdir()}
    assert {"model.ubj", "feature_spec.json", "metadata.json", "reference.json"} <= files
    load_bundle(model_dir)


TRAIN_POINTS: list[tuple[str, int, float]] = [
    # (checkpoint, hit, 0: kill it there; else kill it up to that many seconds after it passes)
    ("validate-stage", 1, 1.0),  # somewhere inside Great Expectations
    ("fit", 1, 0.2),  # somewhere inside XGBoost's boosting rounds
    ("bundle-half-written", 2, 0),  # model.ubj and reference.json staged, not the rest
    ("object-before-rename", 2, 0),  # an artifact object written under its temporary name
    ("before-registry-commit", 1, 0),  # the version row and its audit event not committed
    ("gate-deciding", 1, 0),  # registered and committed; the gate has not decided
]


@flow(name="register-and-gate")
def _register_and_gate(root: str) -> tuple[int, bool, str | None]:
    """The end of the training flow on the model folder as it is (no retraining)."""
    project = Path(root)
    params = load_params(project / "params.yaml")
    version, needs_gate = register_model(project, params)
    decision = apply_decision(project, params, version) if needs_gate else None
    return version, needs_gate, decision.outcome if decision else None


def test_training_killed_at_random_points_changes_nothing_half_way(
    projects: dict[str, Path], zygote: Zygote, tmp_path: Path, figures: Figures
) -> None:
    root = projects["train"]
    before = _registry_state(root)
    assert before == {"versions": [(1, "promote")], "champion": 1}
    rng = random.Random(SEED)
    kills = []
    for number, (point, hit, within) in enumerate(TRAIN_POINTS):
        marker, log = tmp_path / f"train-{number}.marker", tmp_path / f"train-{number}.log"
        pid = zygote.fork(
            "train",
            {"root": str(root)},
            log,
            checkpoint={"name": point, "hit": hit, "pause": not within},
            marker=marker,
            # An empty cache: validation runs (an earlier run's result would be reused).
            env={"KEEL_CACHE_DIR": str(tmp_path / f"cache-{number}")},
        )
        reached = wait_for_marker(marker, pid, zygote, timeout=300)
        assert reached == f"{point} {hit}", log.read_text()[-3000:]
        delay = rng.uniform(0.0, within)
        threading.Event().wait(delay)
        kill(pid)
        status = zygote.wait(pid, 30)
        assert status == {"status": "killed", "signal": 9}, (point, status)
        state = _registry_state(root)
        assert state["champion"] == 1  # the champion never moves during a killed training
        # Nothing half-registered: at most the new version, complete and audited.
        assert state["versions"][0] == (1, "promote") and len(state["versions"]) <= 2
        _model_loadable(root)
        objects = _objects_intact(root)
        kills.append({"point": point, "delay_s": round(delay, 3), "objects": objects, **state})

    # The last kill left v2 registered but never gated, and models/model holds its bundle.
    # Registering the same bundle again (what `keel train` does when DVC finds every stage up
    # to date) hands it back for its gate decision instead of calling it "unchanged".
    assert _registry_state(root)["versions"] == [(1, "promote"), (2, None)]
    version, needs_gate, outcome = _register_and_gate(str(root))
    assert (version, needs_gate) == (2, True)
    assert _registry_state(root)["versions"][1] == (2, outcome)

    _run_to_end(zygote, "train", {"root": str(root)}, tmp_path / "train-final.log")
    after = _registry_state(root)
    assert len(after["versions"]) == 3  # a retraining makes new bytes (trained_at): v3
    assert all(outcome in {"promote", "reject"} for _, outcome in after["versions"])
    _model_loadable(root)
    figures.section("kills")["train"] = {
        "kills": len(kills),
        "survived": len(kills),
        "points": [k["point"] for k in kills],
        "sequence": kills,
        "final": after,
    }


def _pg_register_champion(root: Path, url: str) -> None:
    """Put the project's trained model in a PostgreSQL registry as champion."""
    engine = open_database(url)
    store = ArtifactStore(str(ProjectPaths(root).state_dir / "artifacts"))
    ref = store.put_bundle(ProjectPaths(root).model_dir)
    params = load_params(root / "params.yaml")
    with Session(engine) as s, s.begin():
        row = repo.register_version(
            s,
            model_name=params.gate.model_name,
            actor="tester",
            artifact_uri=ref.uri,
            artifact_sha256=ref.sha256,
            metrics={},
            params={},
            training_window={},
            fingerprints={},
            code_version={},
            libraries={},
            device="cpu",
            flow_run_id=None,
        )
        repo.promote(s, params.gate.model_name, row.version, actor="tester", reason="test")
    engine.dispose()


def _pg_predictions(url: str) -> pd.DataFrame:
    engine = create_engine(url)
    with engine.connect() as conn:
        frame = pd.read_sql(
            text(
                "SELECT batch_id, entity_key, score, decision, reasons FROM predictions"
                " ORDER BY entity_key"
            ),
            conn,
        )
    engine.dispose()
    return frame


def test_connection_dropped_mid_write_is_retried_with_a_clear_log_line(
    champion: Path,
    tmp_path: Path,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    figures: Figures,
) -> None:
    import keel.store

    root = copy_project(champion, tmp_path / "project")
    monkeypatch.setenv("KEEL_DATABASE_URL", pg_url)
    monkeypatch.setenv("KEEL_CACHE_DIR", str(tmp_path / "cache"))
    _pg_register_champion(root, pg_url)
    params = load_params(root / "params.yaml")
    real_copy = keel.store._copy_postgres
    drops: list[int] = []

    def copy_then_drop(connection: Any, rows: Any) -> None:
        rows = list(rows)
        if not drops:  # the first attempt: half the rows, then the server drops us
            real_copy(connection, rows[: len(rows) // 2])
            pid = connection.connection.driver_connection.info.backend_pid
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            drops.append(pid)
        real_copy(connection, rows)

    monkeypatch.setattr(keel.store, "_copy_postgres", copy_then_drop)
    with caplog.at_level(logging.WARNING):
        result = score_batch.fn(root, params, dt.datetime.fromisoformat(AS_OFS[1]))
    assert drops and result.written > 0 and not result.skipped
    lines = [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert f"writing batch {result.batch_id}" in lines[0]
    assert "rolled back; retrying (attempt 2 of 3)" in lines[0]
    stored = _pg_predictions(pg_url)
    monkeypatch.delenv("KEEL_DATABASE_URL")  # the same batch, undisturbed, on SQLite
    reference = copy_project(champion, tmp_path / "reference")
    score_batch.fn(reference, params, dt.datetime.fromisoformat(AS_OFS[1]))
    want = predictions(reference)
    assert len(stored) == len(want) == result.written  # once each: the half write was undone
    assert stored["entity_key"].is_unique
    assert sorted(stored["score"]) == pytest.approx(sorted(want["score"]), abs=1e-12)
    figures.section("kills")["connection_drop"] = {
        "backend": "postgresql",
        "dropped_during": "COPY of a scoring batch (half the rows sent)",
        "log_line": lines[0],
        "rows_after_retry": len(stored),
    }


def test_registry_write_on_a_dropped_connection_rolls_back(
    champion: Path, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Registering is not idempotent, so it is not retried: the transaction rolls back and the
    # error says so; nothing is half-registered, and running it again works.
    import keel.registry.repository as repository
    from keel.db import DatabaseUnavailableError

    root = copy_project(champion, tmp_path / "project")
    monkeypatch.setenv("KEEL_DATABASE_URL", pg_url)
    params = load_params(root / "params.yaml")
    real_event = repository.record_event
    dropped: list[bool] = []

    def drop_then_record(session: Session, *args: Any, **kwargs: Any) -> Any:
        if not dropped:
            pid = session.connection().connection.driver_connection.info.backend_pid
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            dropped.append(True)
        return real_event(session, *args, **kwargs)

    monkeypatch.setattr(repository, "record_event", drop_then_record)
    with pytest.raises(DatabaseUnavailableError, match="connection lost while registering"):
        register_model.fn(root, params)
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM model_versions")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 0
    engine.dispose()
    version, new = register_model.fn(root, params)
    assert (version, new) == (1, True)
