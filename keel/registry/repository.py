"""Registry operations. Every function takes a `Session` whose transaction the caller owns.

Alias moves are serialized per model name (a PostgreSQL advisory lock; SQLite's
`BEGIN IMMEDIATE`), and each move appends to the alias history and the audit trail in the same
transaction, so concurrent promotions leave exactly one champion and a consistent history.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from keel.registry.models import AliasChange, AliasRow, AuditEvent, ModelVersion

__all__ = [
    "ALIASES",
    "Alias",
    "GateStateError",
    "NoPreviousChampionError",
    "RegistryError",
    "VersionNotFoundError",
    "alias_history",
    "approve",
    "audit_log",
    "find_by_artifact",
    "get_alias",
    "get_version",
    "list_versions",
    "lock_model",
    "promote",
    "record_event",
    "register_version",
    "rollback",
    "set_challenger",
]

Alias = Literal["champion", "challenger"]
ALIASES: tuple[Alias, ...] = ("champion", "challenger")


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message says why and what to do."""


class VersionNotFoundError(RegistryError):
    """No such model version."""


class NoPreviousChampionError(RegistryError):
    """A rollback was asked for but no earlier champion exists."""


class GateStateError(RegistryError):
    """An approval or promotion conflicts with the version's gate decision or alias state."""


def lock_model(session: Session, model_name: str) -> None:
    """Serialize writers of one model name until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(model_name.encode())
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def record_event(
    session: Session,
    model_name: str,
    version: int | None,
    event: str,
    *,
    actor: str,
    reason: str,
    metrics: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one lifecycle event to the audit trail."""
    row = AuditEvent(
        model_name=model_name,
        version=version,
        event=event,
        actor=actor,
        reason=reason,
        metrics=metrics or {},
    )
    session.add(row)
    session.flush()
    return row


def register_version(
    session: Session, *, model_name: str, actor: str, **fields: Any
) -> ModelVersion:
    """Add the next version of `model_name` (1, 2, ...) and audit it as registered.

    Args:
        session: Open session; the caller commits.
        model_name: The registered model's name.
        actor: Who or what registers it.
        **fields: The remaining `ModelVersion` columns (artifact, params, metrics, lineage).

    Returns:
        The new version row.
    """
    lock_model(session, model_name)
    latest = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_name == model_name)
    )
    row = ModelVersion(model_name=model_name, version=(latest or 0) + 1, created_by=actor, **fields)
    session.add(row)
    session.flush()
    record_event(
        session,
        model_name,
        row.version,
        "registered",
        actor=actor,
        reason=f"registered from artifact {row.artifact_sha256[:12]}",
        metrics=row.metrics,
    )
    return row


def find_by_artifact(session: Session, model_name: str, sha256: str) -> int | None:
    """The version already registered with this exact artifact, if any."""
    return session.scalar(
        select(ModelVersion.version).where(
            ModelVersion.model_name == model_name, ModelVersion.artifact_sha256 == sha256
        )
    )


def get_version(session: Session, model_name: str, version: int) -> ModelVersion:
    """Fetch a version or raise `VersionNotFoundError` listing what exists."""
    row = session.scalar(
        select(ModelVersion).where(
            ModelVersion.model_name == model_name, ModelVersion.version == version
        )
    )
    if row is None:
        known = [v.version for v in list_versions(session, model_name)]
        raise VersionNotFoundError(
            f"model '{model_name}' has no version {version}"
            + (f" (versions: {known[0]}..{known[-1]})" if known else " (no versions registered)")
        )
    return row


def list_versions(session: Session, model_name: str) -> Sequence[ModelVersion]:
    """All versions of a model, oldest first."""
    return session.scalars(
        select(ModelVersion)
        .where(ModelVersion.model_name == model_name)
        .order_by(ModelVersion.version)
    ).all()


def get_alias(session: Session, model_name: str, alias: Alias) -> ModelVersion | None:
    """The version holding an alias, if any."""
    return session.scalar(
        select(ModelVersion)
        .join(AliasRow, AliasRow.version_id == ModelVersion.id)
        .where(AliasRow.model_name == model_name, AliasRow.alias == alias)
    )


def _move_alias(
    session: Session,
    model_name: str,
    alias: Alias,
    target: ModelVersion | None,
    *,
    actor: str,
    reason: str,
) -> int | None:
    current = session.scalar(
        select(AliasRow).where(AliasRow.model_name == model_name, AliasRow.alias == alias)
    )
    previous = session.get(ModelVersion, current.version_id).version if current else None  # type: ignore[union-attr]
    if target is None:
        if current is not None:
            session.delete(current)
    elif current is None:
        session.add(AliasRow(model_name=model_name, alias=alias, version_id=target.id))
    else:
        current.version_id = target.id
    session.add(
        AliasChange(
            model_name=model_name,
            alias=alias,
            version=target.version if target else None,
            previous_version=previous,
            actor=actor,
            reason=reason,
        )
    )
    session.flush()
    return previous


def promote(
    session: Session, model_name: str, version: int, *, actor: str, reason: str
) -> int | None:
    """Make `version` the champion; returns the previous champion's version.

    A version that held `challenger` leaves that alias. The move, its history row and a
    `promoted` audit event are written together.
    """
    lock_model(session, model_name)
    target = get_version(session, model_name, version)
    previous = _move_alias(session, model_name, "champion", target, actor=actor, reason=reason)
    challenger = get_alias(session, model_name, "challenger")
    if challenger is not None and challenger.version == version:
        _move_alias(session, model_name, "challenger", None, actor=actor, reason="promoted")
    record_event(
        session,
        model_name,
        version,
        "promoted",
        actor=actor,
        reason=f"{reason} (previous champion: {previous if previous is not None else 'none'})",
        metrics=target.metrics,
    )
    return previous


def set_challenger(
    session: Session, model_name: str, version: int, *, actor: str, reason: str
) -> None:
    """Park a gate-passing version as `challenger` until a person approves it."""
    lock_model(session, model_name)
    target = get_version(session, model_name, version)
    _move_alias(session, model_name, "challenger", target, actor=actor, reason=reason)


def approve(session: Session, model_name: str, version: int, *, actor: str) -> int | None:
    """A person approves the waiting challenger: it becomes champion.

    Raises:
        GateStateError: The version did not pass the gate, or is not the current challenger.
    """
    lock_model(session, model_name)
    target = get_version(session, model_name, version)
    if target.gate_outcome != "await_approval":
        raise GateStateError(
            f"version {version} of '{model_name}' cannot be approved: its gate outcome is "
            f"'{target.gate_outcome or 'none'}', only a version awaiting approval can be"
        )
    challenger = get_alias(session, model_name, "challenger")
    if challenger is None or challenger.version != version:
        raise GateStateError(
            f"version {version} of '{model_name}' is not the current challenger "
            f"(challenger: {challenger.version if challenger else 'none'})"
        )
    record_event(
        session, model_name, version, "approved", actor=actor, reason="approved by a person"
    )
    return promote(session, model_name, version, actor=actor, reason="approved challenger")


def rollback(session: Session, model_name: str, *, actor: str, reason: str) -> int:
    """Return the champion alias to the version that held it before the current one.

    Returns:
        The version that is champion again.

    Raises:
        NoPreviousChampionError: There is no champion, or none before it.
    """
    lock_model(session, model_name)
    current = get_alias(session, model_name, "champion")
    last = session.scalar(
        select(AliasChange)
        .where(AliasChange.model_name == model_name, AliasChange.alias == "champion")
        .order_by(AliasChange.id.desc())
        .limit(1)
    )
    if current is None or last is None or last.previous_version is None:
        raise NoPreviousChampionError(
            f"model '{model_name}' has no previous champion to roll back to"
            + (f" (champion: v{current.version})" if current else " (no champion)")
        )
    target = get_version(session, model_name, last.previous_version)
    _move_alias(session, model_name, "champion", target, actor=actor, reason=f"rollback: {reason}")
    record_event(
        session,
        model_name,
        target.version,
        "rolled_back",
        actor=actor,
        reason=f"{reason} (from v{current.version})",
        metrics=target.metrics,
    )
    return target.version


def alias_history(
    session: Session, model_name: str, alias: Alias | None = None
) -> Sequence[AliasChange]:
    """Every alias move of a model, oldest first."""
    query = select(AliasChange).where(AliasChange.model_name == model_name)
    if alias is not None:
        query = query.where(AliasChange.alias == alias)
    return session.scalars(query.order_by(AliasChange.id)).all()


def audit_log(session: Session, model_name: str, limit: int | None = None) -> Sequence[AuditEvent]:
    """The audit trail of a model, oldest first (the newest `limit` events if given)."""
    query = select(AuditEvent).where(AuditEvent.model_name == model_name)
    if limit is not None:
        newest = session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)).all()
        return list(reversed(newest))
    return session.scalars(query.order_by(AuditEvent.id)).all()
