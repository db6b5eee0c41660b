"""Fixtures of the API tests: a served project, an app on a private copy of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from keel.config import ApiConfig, load_params
from keel.serving.app import DashboardOptions, create_app
from keel.serving.auth import ApiKeys
from keel.serving.holder import ScoringOptions
from tasks.production import load_records
from tests.api.helpers import TestClient
from tests.api.project import private_copy, registry_of, served_project

API_KEY = "test-key-0123456789"
OTHER_KEY = "second-key-abcdef"


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, hotel_sample: pd.DataFrame) -> Path:
    """The populated project (two models, batches, outcomes, monitoring), built once."""
    return served_project(tmp_path_factory.getbasetemp(), hotel_sample)


@pytest.fixture()
def project(served: Path, tmp_path: Path) -> Path:
    """A private copy of the served project."""
    return private_copy(served, tmp_path / "project")


def make_app(root: Path, **api: object):  # type: ignore[no-untyped-def]
    """The app of a project, with test keys and any `api` settings overridden."""
    params = load_params(root / "params.yaml")
    config = ApiConfig(**{"poll_seconds": 0.2, "log_flush_seconds": 0.2, **api})
    engine, store = registry_of(root)
    return create_app(
        engine=engine,
        store=store,
        scoring=ScoringOptions(
            model_name=params.gate.model_name,
            threshold=params.evaluate.threshold,
            reason_codes=params.score.reason_codes,
            reason_method=params.score.reason_method,
            entity_key=params.data.entity_key.name,
            max_records=config.max_records,
            target=params.data.target,
            history_pool=lambda: load_records(root, params),
        ),
        config=config,
        keys=ApiKeys.from_env_value(f"{API_KEY}, {OTHER_KEY}") if config.require_key else None,
        dashboard_options=DashboardOptions(
            primary_metric=params.gate.primary_metric,
            psi_threshold=params.monitor.psi_threshold,
            window_days=params.monitor.window_days,
            prefect_ui="http://prefect.example:4200",
        ),
    )


@pytest.fixture()
def client(project: Path) -> Iterator[TestClient]:
    """A test client of the app on a private copy (lifespan run: the champion is loaded)."""
    with TestClient(make_app(project), headers={"X-API-Key": API_KEY}) as test_client:
        yield test_client
