"""Serving settings from the environment: API keys and the URLs the dashboard links to."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DASHBOARD_URL", "ServingSettings"]

DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8000/dashboard"


class ServingSettings(BaseSettings):
    """`KEEL_*` environment variables of the API and the dashboard.

    Attributes:
        api_keys: Comma-separated API keys (`KEEL_API_KEYS`); hashed at startup, never logged.
        dashboard_url: Where the dashboard is reachable (`KEEL_DASHBOARD_URL`), for the links
            that training and monitoring runs publish in Prefect.
        prefect_ui_url: The Prefect UI (`KEEL_PREFECT_UI_URL`), for the dashboard's links to
            the runs that made each model.
    """

    model_config = SettingsConfigDict(env_prefix="KEEL_", frozen=True, extra="ignore")

    api_keys: SecretStr | None = None
    dashboard_url: str = DEFAULT_DASHBOARD_URL
    prefect_ui_url: str | None = None
