"""Races between real processes: 20 promotions through `keel models promote` at one moment on
PostgreSQL, and two `score` runs of the same batch at the same time (PostgreSQL and SQLite)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from keel.config import load_params
from keel.db import open_database
from keel.layout import ProjectPaths
from keel.registry import repository as repo
from keel.registry.models import AliasRow, ModelVersion
from keel.registry.store import ArtifactStore
from tests.reliability.conftest import Figures, copy_project, sqlite_url
from tests.reliability.forks import Zygote

pytestmark = pytest.mark.slow
PROMOTIONS = 20
AS_OF = dt.datetime(2016, 7, 15, tzinfo=dt.UTC).isoformat()


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Iterator[Zygote]:
    env = {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    parent = Zygote(env, [], tmp_path_factory.mktemp("races") / "zygote.log")
    yield parent
    parent.close()


def _register_versions(root: Path, url: str, count: int) -> str:
    """`count` versions of the project's model in the database at `url`; returns its name."""
    engine = open_database(url)
    store = ArtifactStore(str(ProjectPaths(root).state_dir / "artifacts"))
    ref = store.put_bundle(ProjectPaths(root).model_dir)
    name = load_params(root / "params.yaml").gate.model_name
    with Session(engine) as s, s.begin():
        for _ in range(count):
            repo.register_version(
                s,
                model_name=name,
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
    engine.dispose()
    return name


def test_20_concurrent_promotions_on_postgresql_leave_one_champion(
    champion: Path, tmp_path: Path, pg_url: str, zygote: Zygote, figures: Figures
) -> None:
    root = copy_project(champion, tmp_path / "project")
    name = _register_versions(root, pg_url, PROMOTIONS)
    go = tmp_path / "go"
    pids = [
        zygote.fork(
            "promote",
            {
                "version": version,
                "reason": f"race {version}",
                "params": str(root / "params.yaml"),
                "go": str(go),
            },
            tmp_path / f"promote-{version}.log",
            env={"KEEL_DATABASE_URL": pg_url, "KEEL_ACTOR": f"process-{version}"},
        )
        for version in range(1, PROMOTIONS + 1)
    ]
    go.touch()  # all 20 processes promote now
    for pid in pids:
        status = zygote.wait(pid, 120)
        assert status == {"status": "exited", "code": 0}, status

    engine = open_database(pg_url)
    with Session(engine) as s:
        champions = s.query(AliasRow).filter(AliasRow.alias == "champion").all()
        assert len(champions) == 1
        moves = repo.alias_history(s, name, "champion")
        assert len(moves) == PROMOTIONS
        for before, after in itertools.pairwise(moves):  # no lost update
            assert after.previous_version == before.version
        promoted = [e for e in repo.audit_log(s, name) if e.event == "promoted"]
        assert [e.version for e in promoted] == [m.version for m in moves]
        assert {e.actor for e in promoted} == {f"process-{v}" for v in range(1, 21)}
        final = s.get(ModelVersion, champions[0].version_id)
        assert final is not None and final.version == moves[-1].version
    engine.dispose()
    figures.section("races")["promotions"] = {
        "backend": "postgresql",
        "processes": PROMOTIONS,
        "champions_after": 1,
        "alias_moves": len(moves),
        "audit_promotions": len(promoted),
        "order": [m.version for m in moves],
    }


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_two_score_runs_of_one_batch_write_it_once(
    backend: str,
    champion: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    zygote: Zygote,
    figures: Figures,
) -> None:
    root = copy_project(champion, tmp_path / "project")
    env = {"KEEL_CACHE_DIR": str(tmp_path / "cache")}
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
        _register_versions(root, url, 1)
        engine = open_database(url)
        with Session(engine) as s, s.begin():
            repo.promote(
                s, load_params(root / "params.yaml").gate.model_name, 1, actor="t", reason="t"
            )
        engine.dispose()
        env["KEEL_DATABASE_URL"] = url
    else:
        url = sqlite_url(root)
    logs = [tmp_path / f"score-{n}.log" for n in (1, 2)]
    pids = [
        zygote.fork("score", {"root": str(root), "as_ofs": [AS_OF]}, log, env=env) for log in logs
    ]
    statuses = [zygote.wait(pid, 300) for pid in pids]
    assert statuses == [{"status": "exited", "code": 0}] * 2, [
        log.read_text()[-2000:] for log in logs
    ]

    engine = create_engine(url)
    with engine.connect() as conn:
        batches = conn.execute(text("SELECT batch_id, rows FROM score_batches")).all()
        stored = conn.execute(
            text("SELECT count(*), count(DISTINCT entity_key) FROM predictions")
        ).one()
    engine.dispose()
    assert len(batches) == 1 and stored[0] == stored[1] == batches[0].rows > 0
    messages = "\n".join(log.read_text() for log in logs)
    winners = messages.count(f"scored {batches[0].rows} records")
    losers = messages.count("already scored: nothing written") + messages.count(
        "written concurrently by another run: nothing written"
    )
    assert (winners, losers) == (1, 1), messages[-4000:]
    figures.section("races").setdefault("same_batch", {})[backend] = {
        "runs": 2,
        "batches_written": len(batches),
        "predictions": stored[0],
        "second_run": "skipped" if losers else "?",
    }
