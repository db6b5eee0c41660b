"""A small served project: two real models on the hotel sample and a populated store.

v1 is trained on the shipped split (labels known by 2016-07-01) and promoted; weekly batches
are scored and monitored; then a retraining as of 2016-08-01 trains v2 (labels known by
2016-07-31), which is promoted, scores two more batches and is monitored too. Everything goes
through the real stage tasks, the real artifact store and registry, and the real `score`,
`outcomes` and `monitor` tasks (through `.fn`, so no Prefect server is needed).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from pathlib import Path

import pandas as pd
import yaml
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from flows.production import params_for_retrain
from keel.config import Params, load_params
from keel.db import open_database
from keel.layout import STAGES, ProjectPaths
from keel.registry import repository as repo
from keel.registry.store import ArtifactStore
from tasks import stages
from tasks.production import monitor_window, record_known_outcomes, score_batch
from tests.conftest import make_project

UTC = dt.UTC
V1_BATCHES = [dt.datetime(2016, 7, d, tzinfo=UTC) for d in (8, 15, 22, 29)]
V1_MONITORS = [dt.datetime(2016, 7, 22, tzinfo=UTC), dt.datetime(2016, 7, 29, tzinfo=UTC)]
RETRAIN_AS_OF = dt.datetime(2016, 8, 1, tzinfo=UTC)
V2_BATCHES = [dt.datetime(2016, 8, d, tzinfo=UTC) for d in (5, 12)]
V2_MONITORS = [dt.datetime(2016, 8, 12, tzinfo=UTC)]
FLOW_RUN_IDS = {1: str(uuid.UUID(int=1)), 2: str(uuid.UUID(int=2))}
_DONE = ".served-project-complete"


def database_url(root: Path) -> str:
    return f"sqlite:///{ProjectPaths(root).state_dir / 'keel.db'}"


def registry_of(root: Path) -> tuple[Engine, ArtifactStore]:
    state = ProjectPaths(root).state_dir
    return open_database(database_url(root)), ArtifactStore(str(state / "artifacts"))


def train_stages(workdir: Path, params: Params) -> None:
    for name in STAGES:
        getattr(stages, name).fn(workdir, params)


def register_and_promote(
    root: Path,
    workdir: Path,
    params: Params,
    *,
    promote: bool = True,
    flow_run_id: str | None = None,
) -> int:
    """Store the model trained in `workdir` and register it (lineage from its metadata)."""
    engine, store = registry_of(root)
    paths = ProjectPaths(workdir)
    ref = store.put_bundle(paths.model_dir)
    metadata = json.loads((paths.model_dir / "metadata.json").read_text())
    metrics = json.loads(paths.metrics.read_text())
    name = params.gate.model_name
    with Session(engine) as session, session.begin():
        row = repo.register_version(
            session,
            model_name=name,
            actor="tester",
            artifact_uri=ref.uri,
            artifact_sha256=ref.sha256,
            metrics=metrics,
            params=params.model_dump(mode="json", by_alias=True),
            training_window=metadata["training_window"],
            fingerprints=metadata["data_fingerprint"],
            code_version={"commit": "0123456789abcdef", "dirty": False},
            libraries=metadata["libraries"],
            device=metadata["device"],
            flow_run_id=flow_run_id,
        )
        version = row.version
        row.gate_outcome = "promote"
        repo.record_event(
            session, name, version, "evaluated", actor="tester", reason="gate passed (test)"
        )
        if promote:
            repo.promote(session, name, version, actor="tester", reason="gate passed (test)")
    engine.dispose()
    return version


def build_served_project(root: Path, sample: pd.DataFrame) -> Path:
    """Build the project described in the module docstring at `root` (empty folder)."""
    make_project(root, sample)
    params_path = root / "params.yaml"
    raw = yaml.safe_load(params_path.read_text())
    raw["monitor"]["min_rows"] = 20  # a sampled week has tens of labelled bookings
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(params_path)
    train_stages(root, params)
    register_and_promote(root, root, params, flow_run_id=FLOW_RUN_IDS[1])
    for as_of in V1_BATCHES:
        score_batch.fn(root, params, as_of)
    record_known_outcomes.fn(root, params, dt.datetime(2016, 10, 1, tzinfo=UTC))
    for as_of in V1_MONITORS:
        monitor_window.fn(root, params, as_of)
    engine, _ = registry_of(root)
    with Session(engine) as session, session.begin():
        repo.record_event(
            session,
            params.gate.model_name,
            None,
            "retrain",
            actor="tester",
            reason="retraining as of 2016-08-01 (test)",
            metrics={"as_of": RETRAIN_AS_OF.isoformat()},
        )
    engine.dispose()
    workdir = ProjectPaths(root).state_dir / "retrain" / "20160801"
    workdir.mkdir(parents=True)
    retrain_params = params_for_retrain(params, root, RETRAIN_AS_OF)
    train_stages(workdir, retrain_params)
    register_and_promote(root, workdir, retrain_params, flow_run_id=FLOW_RUN_IDS[2])
    for as_of in V2_BATCHES:
        score_batch.fn(root, params, as_of)
    for as_of in V2_MONITORS:
        monitor_window.fn(root, params, as_of)
    (root / _DONE).touch()
    return root


def served_project(base: Path, sample: pd.DataFrame) -> Path:
    """The served project under `base`, built once per test session."""
    root = base / "served-project"
    if (root / _DONE).is_file():
        return root
    if root.exists():
        shutil.rmtree(root)
    return build_served_project(root, sample)


def private_copy(source: Path, target: Path) -> Path:
    """A copy with its own database and artifact store (tests may write to it)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("retrain"))
    return target
