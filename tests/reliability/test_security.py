"""Security: no pickle on any path (Prefect's results included), every artifact verified at
load, secrets only from the environment and never in logs, API keys kept hashed and compared
in constant time, dependencies pinned, and the audit fails clearly when it cannot run."""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import hmac
import importlib
import logging
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect import Flow, Task
from prefect.settings import get_current_settings
from sqlalchemy.orm import Session

from keel.config import load_params
from keel.layout import ProjectPaths
from keel.registry import repository as repo
from keel.registry.store import ArtifactIntegrityError
from keel.serving.auth import ApiKeys
from tests.api.conftest import API_KEY, make_app
from tests.api.helpers import TestClient
from tests.reliability.conftest import REPO, Figures, copy_project, sqlite_url

PACKAGES = ("keel", "tasks", "flows")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "joblib", "cloudpickle", "dill", "shelve"}
UNSAFE_CALLS = {"read_pickle", "to_pickle", "loads_pickle"}
_unpickled: list[str] = []
_watching: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _watching and event == "pickle.find_class":
        _unpickled.append(f"{args[0]}.{args[1]}")


sys.addaudithook(_audit)  # hooks stay for the process: it records only while _watching


def _sources() -> list[Path]:
    return [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]


def test_no_pickle_or_joblib_anywhere_in_the_code() -> None:
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            elif isinstance(node, ast.Attribute) and node.attr in UNSAFE_CALLS:
                names = [node.attr]
            elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                names = ["allow_pickle"]
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno} {n}"
                for n in names
                if n in (UNSAFE_MODULES | UNSAFE_CALLS | {"allow_pickle"})
            ]
    assert offenders == []


def _prefect_objects() -> list[Flow[Any, Any] | Task[Any, Any]]:
    found: dict[int, Flow[Any, Any] | Task[Any, Any]] = {}
    for package in ("tasks", "flows"):
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            loaded = importlib.import_module(f"{package}.{info.name}")
            for value in vars(loaded).values():
                if isinstance(value, Flow | Task):
                    found[id(value)] = value
    return list(found.values())


def test_prefect_never_persists_or_pickles_a_result() -> None:
    objects = _prefect_objects()
    assert len(objects) >= 15  # every flow and task of Keel
    for obj in objects:
        assert obj.persist_result is not True, obj.name
        assert obj.result_serializer in (None, "json"), obj.name
        if isinstance(obj, Task):
            assert obj.result_storage_key is None and obj.cache_key_fn is None, obj.name
    settings = get_current_settings()
    assert settings.results.persist_by_default is False
    assert settings.tasks.default_persist_result is not True


@pytest.mark.slow
def test_real_flows_write_no_result_and_unpickle_nothing(
    champion: Path, tmp_path: Path, figures: Figures
) -> None:
    from flows.production import monitor_flow, outcomes_flow, score_flow
    from flows.train import train_flow

    root = copy_project(champion, tmp_path / "project")
    storage = Path(get_current_settings().results.local_storage_path)
    before = set(storage.rglob("*")) if storage.exists() else set()
    _watching.append(True)
    try:
        for day in (8, 15):
            score_flow(root=str(root), as_of=dt.datetime(2016, 7, day, tzinfo=dt.UTC))
        outcomes_flow(root=str(root), as_of=dt.datetime(2016, 9, 1, tzinfo=dt.UTC))
        monitor_flow(root=str(root), as_of=dt.datetime(2016, 7, 15, tzinfo=dt.UTC))
        train_flow(root=str(root), force=True)
    finally:
        _watching.clear()
    after = set(storage.rglob("*")) if storage.exists() else set()
    assert after - before == set(), "Prefect persisted a result"
    assert _unpickled == [], _unpickled
    figures.section("security")["pickle"] = {
        "flows_run": ["score", "score", "outcomes", "monitor", "train"],
        "objects_unpickled": 0,
        "result_files_written": 0,
        "prefect_objects_checked": len(_prefect_objects()),
    }


def _tamper(root: Path) -> str:
    """Flip one byte of the champion's model file in the artifact store; returns its sha."""
    engine = __import__("keel.db", fromlist=["open_database"]).open_database(sqlite_url(root))
    name = load_params(root / "params.yaml").gate.model_name
    with Session(engine) as s:
        champion = repo.get_alias(s, name, "champion")
        assert champion is not None
        bundle = champion.artifact_sha256
    engine.dispose()
    objects = ProjectPaths(root).state_dir / "artifacts" / "objects"
    model_sha = hashlib.sha256((ProjectPaths(root).model_dir / "model.ubj").read_bytes())
    target = objects / model_sha.hexdigest()[:2] / model_sha.hexdigest()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return bundle


@pytest.mark.slow
def test_every_load_path_refuses_a_tampered_artifact(
    champion: Path, tmp_path: Path, figures: Figures
) -> None:
    from tasks.production import monitor_window, score_batch
    from tasks.registry import evaluate_versions

    root = copy_project(champion, tmp_path / "project")
    params = load_params(root / "params.yaml")
    _tamper(root)
    refused = {}
    with pytest.raises(ArtifactIntegrityError, match="failed its checksum") as scored:
        score_batch.fn(root, params, dt.datetime(2016, 7, 15, tzinfo=dt.UTC))
    refused["score"] = str(scored.value)
    assert "v1" in refused["score"] and "expected sha256" in refused["score"]
    with pytest.raises(ArtifactIntegrityError):
        evaluate_versions.fn(root, params, 1)  # the gate re-scores the champion
    refused["gate"] = "refused"
    root2 = copy_project(champion, tmp_path / "monitored")
    score_batch.fn(root2, params, dt.datetime(2016, 7, 15, tzinfo=dt.UTC))
    _tamper(root2)
    with pytest.raises(ArtifactIntegrityError):
        monitor_window.fn(root2, params, dt.datetime(2016, 7, 15, tzinfo=dt.UTC))
    refused["monitor"] = "refused"
    with TestClient(make_app(root), headers={"X-API-Key": API_KEY}) as client:
        assert client.get("/readyz").status_code == 503
        response = client.post("/v1/predict", json={"records": [{}]})
        assert response.status_code == 503
        assert 'keel_api_errors_total{kind="model_load"}' in client.get("/metrics").text
    refused["api"] = "503, not ready"
    figures.section("security")["checksums"] = refused


def test_secrets_come_from_the_environment_and_are_never_logged(
    champion: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flows.api import build_app
    from keel.db import DatabaseUnavailableError, open_database

    key, password = "k3y-" + "x" * 28, "S3cretPassw0rd"
    root = copy_project(champion, tmp_path / "project")
    # A secret in params.yaml is refused: there is no field for it.
    raw = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(raw + f"api_keys: [{key}]\n")
    with pytest.raises(ValueError, match="api_keys"):
        load_params(root / "params.yaml")
    (root / "params.yaml").write_text(raw)

    monkeypatch.setenv("KEEL_API_KEYS", f"{key},other-key-0123456789")
    caplog.set_level(logging.DEBUG)
    app = build_app(root)
    with TestClient(app) as client:
        assert client.post("/v1/predict", json={}, headers={"X-API-Key": key}).status_code == 422
        assert (
            client.post("/v1/predict", json={}, headers={"X-API-Key": key[:-1]}).status_code == 401
        )
        pages = [
            client.get(p, headers={"X-API-Key": key}).text
            for p in ("/metrics", "/openapi.json", "/v1/model", "/dashboard")
        ]
    assert all(key not in page for page in pages)
    assert key not in caplog.text and key[:-1] not in caplog.text

    url = f"postgresql+psycopg://keel:{password}@127.0.0.1:1/keel"
    with pytest.raises(DatabaseUnavailableError) as unreachable:
        open_database(url)
    assert password not in str(unreachable.value) and "***" in str(unreachable.value)
    assert password not in caplog.text


def test_api_keys_are_kept_hashed_and_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = ["alpha-key-0001", "bravo-key-0002", "charlie-key-0003"]
    held = ApiKeys.from_env_value(",".join(keys))
    stored = vars(held)
    assert all(k not in repr(stored) and k not in repr(held) for k in keys)
    assert all(isinstance(d, bytes) and len(d) == 32 for d in stored["_digests"])
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for presented, verdict in [(keys[0], True), (keys[2], True), ("nope", False), ("", False)]:
        calls.clear()
        assert held.accepts(presented) is verdict
        # Every digest is compared, wherever (or whether) the key matches: no early exit,
        # and only digests are compared, never the keys themselves.
        assert len(calls) == (len(keys) if presented else 0)
        assert all(len(a) == len(b) == 32 for a, b in calls)


def test_dependencies_are_pinned() -> None:
    lines = [
        line.strip()
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    loose = [line for line in lines if not re.fullmatch(r"[A-Za-z0-9._\[\]-]+==[^=<>~!,; ]+", line)]
    assert loose == [] and len(lines) > 100
    pinned = {re.split("==", line)[0].lower().replace("_", "-") for line in lines}
    for needed in ("prefect", "xgboost", "fastapi", "sqlalchemy", "pip-audit", "schemathesis"):
        assert needed in pinned


def test_the_audit_fails_clearly_when_pypi_cannot_be_reached() -> None:
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "audit.py")],
        env={**env, "KEEL_AUDIT_REPORT": os.devnull},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot reach pypi.org's JSON API, the lock was not audited" in done.stderr
