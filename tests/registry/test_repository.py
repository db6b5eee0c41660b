"""Registry operations on SQLite and PostgreSQL: versions, aliases, audit, errors, races."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.orm import Session

from keel.db import DatabaseUnavailableError, open_database
from keel.registry import repository as repo
from keel.registry.models import AliasChange, AliasRow, AuditEvent, ModelVersion
from tests.registry.conftest import register


def snapshot(engine: Engine) -> dict[str, int]:
    with Session(engine) as s:
        return {
            t.__tablename__: s.scalar(select(func.count()).select_from(t)) or 0
            for t in (ModelVersion, AliasRow, AliasChange, AuditEvent)
        }


def test_migrations_create_the_schema_on_first_use(engine: Engine, database_url: str) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {"model_versions", "model_aliases", "alias_history", "audit_events"} <= tables
    assert "alembic_version" in tables
    open_database(database_url).dispose()  # a second open is a no-op


def test_versions_increase_per_model_and_are_audited(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        assert [register(s, "a"), register(s, "a"), register(s, "b")] == [1, 2, 1]
    with Session(engine) as s:
        assert [v.version for v in repo.list_versions(s, "a")] == [1, 2]
        events = repo.audit_log(s, "a")
        assert [(e.event, e.version) for e in events] == [("registered", 1), ("registered", 2)]
        assert events[0].metrics == {"holdout": {"roc_auc": 0.9}}


def test_promote_approve_rollback_keep_history(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        v1, v2, v3 = register(s), register(s), register(s)
        assert repo.promote(s, "m", v1, actor="a", reason="first") is None
        assert repo.promote(s, "m", v2, actor="a", reason="better") == v1
        s.get(ModelVersion, repo.get_version(s, "m", v3).id).gate_outcome = "await_approval"  # type: ignore[union-attr]
        repo.set_challenger(s, "m", v3, actor="gate", reason="passed")
    with Session(engine) as s, s.begin():
        assert repo.approve(s, "m", v3, actor="alice") == v2
        assert repo.get_alias(s, "m", "challenger") is None
        assert repo.rollback(s, "m", actor="bob", reason="bad") == v2
    with Session(engine) as s:
        assert repo.get_alias(s, "m", "champion").version == v2  # type: ignore[union-attr]
        champion_moves = [
            (h.version, h.previous_version) for h in repo.alias_history(s, "m", "champion")
        ]
        assert champion_moves == [(1, None), (2, 1), (3, 2), (2, 3)]
        events = [e.event for e in repo.audit_log(s, "m")]
        assert events[-4:] == ["promoted", "approved", "promoted", "rolled_back"]
        assert {e.actor for e in repo.audit_log(s, "m") if e.event == "approved"} == {"alice"}


@pytest.mark.parametrize(
    "action, error, words",
    [
        (lambda s: repo.get_version(s, "m", 99), repo.VersionNotFoundError, "no version 99"),
        (
            lambda s: repo.promote(s, "m", 99, actor="a", reason="r"),
            repo.VersionNotFoundError,
            "99",
        ),
        (
            lambda s: repo.rollback(s, "m", actor="a", reason="r"),
            repo.NoPreviousChampionError,
            "no previous champion",
        ),
        (
            lambda s: repo.approve(s, "m", 1, actor="a"),
            repo.GateStateError,
            "only a version awaiting approval",
        ),
    ],
    ids=["unknown version", "promote unknown", "rollback without previous", "approve not passed"],
)
def test_errors_are_clear_and_change_nothing(engine: Engine, action, error, words) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as s, s.begin():
        repo.promote(s, "m", register(s), actor="a", reason="first")
    before = snapshot(engine)
    with pytest.raises(error, match=words), Session(engine) as s, s.begin():
        action(s)
    assert snapshot(engine) == before


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(DatabaseUnavailableError, match=r"cannot open the Keel database at .*:1/"):
        open_database("postgresql+psycopg://keel:secret@127.0.0.1:1/keel")
    try:
        open_database("postgresql+psycopg://keel:secret@127.0.0.1:1/keel")
    except DatabaseUnavailableError as exc:
        assert "secret" not in str(exc)


def _promote_in_process(url: str, version: int) -> None:
    engine = open_database(url)
    with Session(engine) as s, s.begin():
        repo.promote(s, "m", version, actor=f"proc-{version}", reason="race")
    engine.dispose()


def assert_consistent(engine: Engine, promotions: int) -> None:
    with Session(engine) as s:
        champions = s.scalars(select(AliasRow).where(AliasRow.alias == "champion")).all()
        assert len(champions) == 1
        moves = repo.alias_history(s, "m", "champion")
        assert len(moves) == promotions
        # No lost update: each move's 'previous' is the version the move before it installed.
        for before, after in itertools.pairwise(moves):
            assert after.previous_version == before.version
        promoted = [e.version for e in repo.audit_log(s, "m") if e.event == "promoted"]
        assert promoted == [m.version for m in moves]
        final = s.get(ModelVersion, champions[0].version_id)
        assert final is not None and final.version == moves[-1].version


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_twenty_concurrent_promotions_leave_one_champion(
    engine: Engine, database_url: str, workers: str
) -> None:
    with Session(engine) as s, s.begin():
        versions = [register(s) for _ in range(20)]
    if workers == "threads":
        barrier = threading.Barrier(20)

        def promote(version: int) -> None:
            barrier.wait()
            with Session(engine) as s, s.begin():
                repo.promote(s, "m", version, actor=f"thread-{version}", reason="race")

        with ThreadPoolExecutor(20) as pool:
            list(pool.map(promote, versions))
    else:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_promote_in_process, args=(database_url, v)) for v in versions]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
    assert_consistent(engine, promotions=20)
