"""`keel api`: the composition root of the online scoring API and the dashboard.

It reads `params.yaml` and the environment once and builds the app with `keel.serving`.
Every uvicorn worker process calls `app_from_env` (the factory uvicorn imports), which finds
the project through `KEEL_API_ROOT` and `KEEL_API_PARAMS`, set by `serve_api`.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

from fastapi import FastAPI

from keel.config import Params, load_params
from keel.db import open_database
from keel.layout import ProjectPaths
from keel.registry.store import ArtifactStore
from keel.serving.app import DashboardOptions, create_app
from keel.serving.auth import ApiKeys
from keel.serving.holder import ScoringOptions
from keel.serving.settings import ServingSettings
from keel.settings import KeelSettings
from tasks.production import load_records

__all__ = ["api_keys", "app_from_env", "build_app", "serve_api"]

ROOT_ENV = "KEEL_API_ROOT"
PARAMS_ENV = "KEEL_API_PARAMS"


def api_keys(params: Params) -> ApiKeys | None:
    """The accepted keys from `KEEL_API_KEYS` (None when `api.require_key` is false).

    Raises:
        ValueError: Keys are required and none are set.
    """
    if not params.api.require_key:
        return None
    secret = ServingSettings().api_keys
    return ApiKeys.from_env_value(secret.get_secret_value() if secret else None)


def build_app(root: Path, params_file: str = "params.yaml") -> FastAPI:
    """Build the app for the project at `root` (database and artifact store as `keel score`).

    Args:
        root: The project folder.
        params_file: Its params file, relative to `root`.

    Returns:
        The FastAPI app; its lifespan loads the champion.
    """
    params = load_params(root / params_file)
    settings = KeelSettings()
    state = ProjectPaths(root).state_dir
    return create_app(
        engine=open_database(settings.resolved_database_url(state)),
        store=ArtifactStore(settings.resolved_artifact_url(state)),
        scoring=ScoringOptions(
            model_name=params.gate.model_name,
            threshold=params.evaluate.threshold,
            reason_codes=params.score.reason_codes,
            reason_method=params.score.reason_method,
            entity_key=params.data.entity_key.name,
            max_records=params.api.max_records,
            target=params.data.target,
            history_pool=lambda: load_records(root, params),
        ),
        config=params.api,
        keys=api_keys(params),
        dashboard_options=DashboardOptions(
            primary_metric=params.gate.primary_metric,
            psi_threshold=params.monitor.psi_threshold,
            window_days=params.monitor.window_days,
            prefect_ui=ServingSettings().prefect_ui_url,
        ),
    )


def app_from_env() -> FastAPI:
    """The app of the project named by `KEEL_API_ROOT` (uvicorn's factory in each worker)."""
    return build_app(Path(os.environ[ROOT_ENV]), os.environ.get(PARAMS_ENV, "params.yaml"))


def serve_api(root: Path, params_file: str, *, host: str, port: int, workers: int) -> None:
    """Run the API on uvicorn until interrupted.

    Args:
        root: The project folder.
        params_file: Its params file, relative to `root`.
        host: Interface to bind.
        port: Port to bind.
        workers: Worker processes (each loads the champion and watches its alias).
    """
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    # Keel's own messages (model swaps, load failures, the prediction log) next to uvicorn's.
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["keel"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    os.environ[ROOT_ENV] = str(root)
    os.environ[PARAMS_ENV] = params_file
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metrics here, so /metrics reports the whole server.
        metrics_dir = tempfile.mkdtemp(prefix="keel-api-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "flows.api:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            log_config=log_config,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
