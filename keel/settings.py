"""Settings from the environment: database and artifact-store URLs, who is acting."""

from __future__ import annotations

import getpass
import socket
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KeelSettings"]


class KeelSettings(BaseSettings):
    """`KEEL_*` environment variables. Secrets (database passwords) only ever come from here.

    Attributes:
        database_url: SQLAlchemy URL of the registry (default: SQLite in the project's state
            folder). PostgreSQL: `postgresql+psycopg://user:pass@host:5432/db`.
        artifact_url: Artifact store folder or fsspec URL (default: the state folder).
        actor: Who is acting, recorded in the audit trail (default: user@host).
        dask_address: The Dask scheduler of `engine: dask` (`tcp://host:8786`); overrides
            `engine.address` in `params.yaml`.
        cache_dir: Where results of pure, expensive steps (validation of a batch) are kept,
            keyed by a fingerprint of their inputs (default: `<state_dir>/cache`).
    """

    model_config = SettingsConfigDict(env_prefix="KEEL_", frozen=True, extra="ignore")

    database_url: str | None = None
    artifact_url: str | None = None
    actor: str | None = None
    dask_address: str | None = None
    cache_dir: str | None = None

    def resolved_database_url(self, state_dir: Path) -> str:
        """The database URL, defaulting to `<state_dir>/keel.db`."""
        return self.database_url or f"sqlite:///{state_dir / 'keel.db'}"

    def resolved_artifact_url(self, state_dir: Path) -> str:
        """The artifact store URL, defaulting to `<state_dir>/artifacts`."""
        return self.artifact_url or str(state_dir / "artifacts")

    def resolved_cache_dir(self, state_dir: Path) -> Path:
        """The cache folder, defaulting to `<state_dir>/cache`."""
        return Path(self.cache_dir) if self.cache_dir else state_dir / "cache"

    def resolved_actor(self) -> str:
        """The actor name for the audit trail."""
        if self.actor:
            return self.actor
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return f"{user}@{socket.gethostname()}"
