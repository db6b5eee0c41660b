"""The training flow: the five DVC stages, then register -> gate -> promote, as one flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from keel.config import load_params
from keel.layout import STAGES, ProjectPaths
from keel.lineage import has_pipeline
from keel.report import render_model_card
from tasks import stages
from tasks.io import read_json
from tasks.lineage import commit_stage, current_hashes, stage_is_stale
from tasks.links import publish_dashboard_link
from tasks.registry import apply_decision, register_model

STAGE_TASKS = {
    "ingest": stages.ingest,
    "validate": stages.validate,
    "featurize": stages.featurize,
    "train": stages.train,
    "evaluate": stages.evaluate,
}


@flow(name="train")
def train_flow(
    root: str = ".", params_file: str = "params.yaml", force: bool = False
) -> dict[str, Any]:
    """Validate the data, build features, train and evaluate a model.

    DVC decides what is stale (when the project has a `dvc.yaml` and uses its `params.yaml`);
    Prefect runs each stale stage as a task with logs, then commits it to DVC so `dvc.lock`
    records the hashes. Data that fails validation stops the flow before featurize.

    Args:
        root: The project folder.
        params_file: The params file, relative to `root`.
        force: Run every stage even if DVC says it is up to date.
    """
    log = get_run_logger()
    project = Path(root).resolve()
    params_path = project / params_file
    params = load_params(params_path)
    use_dvc = has_pipeline(project) and params_path == project / "params.yaml"
    ran, skipped = [], []
    for name in STAGES:
        if use_dvc and not force and not stage_is_stale(project, name):
            skipped.append(name)
            continue
        STAGE_TASKS[name](project, params)
        ran.append(name)
        if use_dvc:
            commit_stage(project, name)
    log.info("stages run: %s; up to date: %s", ran or "none", skipped or "none")
    paths = ProjectPaths(project)
    hashes = current_hashes(project, project / params.ingest.source, use_dvc)
    metadata = read_json(paths.model_dir / "metadata.json")
    metrics = read_json(paths.metrics)
    create_markdown_artifact(
        key="model-card",
        markdown=render_model_card(metadata, metrics, hashes),
        description="Model card: data window, holdout metrics, params and DVC hashes",
    )
    version, new = register_model(project, params)
    decision = apply_decision(project, params, version) if new else None
    publish_dashboard_link(
        "dashboard-model", f"models/{version}", f"{params.gate.model_name} v{version}"
    )
    return {
        "ran": ran,
        "skipped": skipped,
        "metrics": metrics["holdout"],
        "hashes": hashes,
        "version": version,
        "decision": {**decision.to_json(), "summary": decision.summary()} if decision else None,
    }
