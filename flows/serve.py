"""`keel serve`: one process serving every deployment (schedules and the retrain automation)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import cast

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.events.schemas.automations import Posture
from prefect.schedules import Cron

from flows.production import RETRAIN_LABEL, monitor_flow, outcomes_flow, retrain_flow, score_flow
from keel.config import Params, load_params

__all__ = ["build_deployments", "replay_deployments", "serve_project", "serve_replay"]


def retrain_trigger_for(params: Params, base: dict[str, str]) -> DeploymentEventTrigger:
    """The automation that starts a retraining when the monitor emits one of its events."""
    name = params.gate.model_name
    return DeploymentEventTrigger(
        name=f"retrain {name} on drift or degraded performance",
        expect=set(params.retrain.events),
        # Events the monitor labels "cooldown" are recorded but start no run.
        match={"prefect.resource.id": f"keel.model.{name}", RETRAIN_LABEL: "due"},
        posture=Posture.Reactive,
        threshold=1,
        # Reactive triggers fire once, then ignore matching events for the rest of `within`:
        # a storm of events starts one retraining.
        within=dt.timedelta(seconds=params.retrain.trigger_within_seconds),
        parameters={**base, "as_of": "{{ event.payload.as_of }}", "reason": "{{ event.event }}"},
    )


def build_deployments(project: Path, params_file: str, params: Params) -> list[RunnerDeployment]:
    """score, outcomes and monitor on cron schedules; retrain on drift/performance events."""
    base = {"root": str(project), "params_file": params_file}
    cron = params.serve
    retrain_trigger = retrain_trigger_for(params, base)
    deployments = [
        score_flow.to_deployment(
            name="score", schedules=[Cron(cron.score_cron, timezone=cron.timezone)], parameters=base
        ),
        outcomes_flow.to_deployment(
            name="outcomes",
            schedules=[Cron(cron.outcomes_cron, timezone=cron.timezone)],
            parameters=base,
        ),
        monitor_flow.to_deployment(
            name="monitor",
            schedules=[Cron(cron.monitor_cron, timezone=cron.timezone)],
            parameters=base,
        ),
        retrain_flow.to_deployment(
            name="retrain", triggers=[retrain_trigger], parameters=base, concurrency_limit=1
        ),
    ]
    # Called from sync code, to_deployment returns the deployment itself, not a coroutine.
    return [cast(RunnerDeployment, d) for d in deployments]


def serve_project(project: Path, params_file: str, params: Params) -> None:
    """Serve until interrupted; schedules stay active when the process stops."""
    serve(*build_deployments(project, params_file, params), pause_on_shutdown=False)


def replay_deployments(state: Path) -> list[RunnerDeployment]:
    """The retrain deployment of a replay's `keel` strategy, started by its automation.

    The strategy is a project under `state` with its own params (model name, cooldown).
    """
    root = state / "keel"
    if not (root / "params.yaml").is_file():
        return []
    params = load_params(root / "params.yaml")
    base = {"root": str(root), "params_file": "params.yaml"}
    deployment = retrain_flow.to_deployment(
        name="replay-keel",
        triggers=[retrain_trigger_for(params, base)],
        parameters=base,
        concurrency_limit=1,
        tags=["keel-replay", "strategy:keel"],
    )
    return [cast(RunnerDeployment, deployment)]


def serve_replay(state: Path) -> None:
    """Serve a replay's retrain deployments until interrupted."""
    serve(*replay_deployments(state), pause_on_shutdown=False)
