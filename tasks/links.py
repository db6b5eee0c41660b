"""Links from Prefect runs to the dashboard page that shows what they produced.

Training and retraining publish a link to the new version's page; monitoring a link to the
drift page at its window. The dashboard's address comes from `KEEL_DASHBOARD_URL`.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from prefect.artifacts import create_link_artifact

from keel.serving.settings import ServingSettings

__all__ = ["dashboard_url", "publish_dashboard_link"]


def dashboard_url(page: str = "", **query: str) -> str:
    """The URL of a dashboard page, e.g. `models/3` or `drift` with `as_of=...`."""
    base = ServingSettings().dashboard_url.rstrip("/")
    url = f"{base}/{quote(page.strip('/'))}" if page.strip("/") else base
    return f"{url}?{urlencode(query)}" if query else url


def publish_dashboard_link(key: str, page: str, text: str, **query: str) -> str:
    """Publish a Prefect link artifact to a dashboard page; returns the URL.

    Args:
        key: The artifact key (lowercase letters, digits and dashes), e.g. `dashboard-model`.
        page: The page below the dashboard's base URL, e.g. `models/3`.
        text: The link text shown in the Prefect UI.
        **query: Query parameters of the page, e.g. `as_of`.
    """
    url = dashboard_url(page, **query)
    create_link_artifact(link=url, link_text=text, key=key, description=f"Keel dashboard: {text}")
    return url
