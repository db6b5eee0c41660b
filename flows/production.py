"""Production flows: score, outcomes, monitor (scheduled) and retrain (started by events).

Every flow takes a logical date `as_of`; a scheduled run passes its scheduled time, so the
same flows serve live schedules, backfills and replays.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from sqlalchemy.orm import Session

from keel.config import Params, load_params
from keel.layout import STAGES, ProjectPaths
from keel.registry import repository as repo
from tasks import stages
from tasks.links import publish_dashboard_link
from tasks.production import (
    as_utc,
    monitor_window,
    record_known_outcomes,
    score_batch,
)
from tasks.registry import (
    adopt_decision,
    apply_decision,
    gate_candidate,
    open_registry,
    register_model,
)

DRIFT_EVENT = "keel.drift.detected"
DEGRADED_EVENT = "keel.performance.degraded"
# A label on the monitor's events: "due" when a retraining as of the event's `as_of` would
# run, "cooldown" when it would be skipped. The retrain automation matches "due" only, so
# events during the cooldown are recorded (and visible in the UI) but start no run.
RETRAIN_LABEL = "keel.retrain"


def _as_of(value: dt.datetime | None) -> dt.datetime:
    """The logical date: given, else the scheduled time of this run, else now."""
    if value is not None:
        return as_utc(value)
    scheduled = flow_run.get_scheduled_start_time()
    return as_utc(scheduled) if scheduled else dt.datetime.now(dt.UTC)


def _load(root: str, params_file: str) -> tuple[Path, Params]:
    project = Path(root).resolve()
    return project, load_params(project / params_file)


@flow(name="score")
def score_flow(
    root: str = ".",
    params_file: str = "params.yaml",
    as_of: dt.datetime | None = None,
    since: dt.datetime | None = None,
) -> dict[str, Any]:
    """Score the records made in the period ending at `as_of` with the champion.

    Invalid rows are quarantined (or the batch rejected, per params); predictions carry the
    top reason codes; the batch is written atomically and only once. `since` replaces the
    period's start (`as_of - score.period_days`), e.g. to take over every open record.
    """
    project, params = _load(root, params_file)
    result = score_batch(
        project, params, _as_of(as_of), since=None if since is None else as_utc(since)
    )
    return asdict(result)


@flow(name="outcomes")
def outcomes_flow(
    root: str = ".", params_file: str = "params.yaml", as_of: dt.datetime | None = None
) -> dict[str, int]:
    """Record the outcomes known by `as_of` (duplicates ignored, never-scored ones counted)."""
    project, params = _load(root, params_file)
    return record_known_outcomes(project, params, _as_of(as_of))


@flow(name="monitor")
def monitor_flow(
    root: str = ".", params_file: str = "params.yaml", as_of: dt.datetime | None = None
) -> dict[str, Any]:
    """Measure accuracy and drift on the window ending at `as_of`; emit events on breaches.

    `keel.drift.detected` names the drifting features and their PSI; `keel.performance.degraded`
    the metrics below their thresholds. Both carry the model version and the window, and the
    resource label `keel.retrain`: "due", or "cooldown" when a retraining as of `as_of` would
    be skipped (the automation starts runs for "due" events only). The result's `retrain`
    says the same (None without events).
    """
    project, params = _load(root, params_file)
    when = _as_of(as_of)
    result = monitor_window(project, params, when)
    name = params.gate.model_name
    resource = {"prefect.resource.id": f"keel.model.{name}"}
    retrain = None
    if result.drifted or result.degraded:
        retrain = "due" if retraining_due(project, params, when) else "cooldown"
        resource[RETRAIN_LABEL] = retrain
    payload = {"model": name, "version": result.model_version, "as_of": result.as_of}
    if result.drift:
        create_table_artifact(
            key="drift",
            table=[
                {"feature": f, "psi": v, "drifted": f in result.drifted}
                for f, v in sorted(result.drift.items(), key=lambda kv: -kv[1])
            ],
            description=f"PSI per feature, window ending {result.as_of}",
        )
    if result.metrics or result.served:
        create_table_artifact(
            key="performance",
            table=[
                {"metric": k, "champion": result.metrics.get(k), "served": result.served.get(k)}
                for k in dict.fromkeys([*result.metrics, *result.served])
            ],
            description=(
                f"Accuracy on the outcomes that arrived in the window ending {result.as_of}: "
                f"champion v{result.model_version} re-scored, and the predictions served"
            ),
        )
    if result.drifted:
        emit_event(
            event=DRIFT_EVENT,
            resource=resource,
            payload={
                **payload,
                "features": [{"feature": f, "psi": result.drift[f]} for f in result.drifted],
            },
        )
    if result.degraded:
        emit_event(
            event=DEGRADED_EVENT,
            resource=resource,
            payload={**payload, "metrics": {m: result.metrics[m] for m in result.degraded}},
        )
    publish_dashboard_link(
        "dashboard-monitor", "drift", f"monitoring {result.as_of}", as_of=result.as_of
    )
    return {**asdict(result), "retrain": retrain}


def params_for_retrain(
    params: Params, project: Path, as_of: dt.datetime, *, refit: bool = False
) -> Params:
    """The params of a retraining at `as_of`: labels known by then, gate on the newest window.

    With `refit`, the params of the refit that replaces a candidate that passed the gate: the
    same recipe on every label known at `as_of` (the gate window too), with no holdout.
    """
    cfg = params.retrain
    # The last whole day before as_of: the split's holdout ends at the end of that day, so
    # nothing after as_of (records or labels) reaches training or the gate window.
    end = as_utc(as_of).date() - dt.timedelta(days=1)
    cutoff = end if refit else end - dt.timedelta(days=cfg.holdout_days)
    split = params.featurize.split.model_copy(
        update={
            "method": "time",
            "cutoff": cutoff,
            "holdout_end": end,
            "validation_start": cutoff - dt.timedelta(days=cfg.validation_days),
            "holdout_labels_known": True,
            "reference_end": end,
            "no_holdout": refit,
        }
    )
    return params.model_copy(
        update={
            "featurize": params.featurize.model_copy(update={"split": split}),
            "ingest": params.ingest.model_copy(
                update={"source": str(project / params.ingest.source)}
            ),
            "validate_": params.validate_.model_copy(
                update={"suite": str(project / params.validate_.suite)}
            ),
        }
    )


def last_retraining(session: Session, name: str) -> dt.datetime | None:
    """The logical date of the latest retraining of `name` (its audited `retrain` event)."""
    last = next((e for e in reversed(repo.audit_log(session, name)) if e.event == "retrain"), None)
    return None if last is None else dt.datetime.fromisoformat(last.metrics["as_of"])


def _in_cooldown(last: dt.datetime | None, when: dt.datetime, params: Params) -> bool:
    """Whether a retraining as of `when` falls within the cooldown of the one as of `last`."""
    cooldown = dt.timedelta(days=params.retrain.cooldown_days)
    return last is not None and when - last < cooldown


def retraining_due(project: Path, params: Params, when: dt.datetime) -> bool:
    """Whether a retraining as of `when` would run: no earlier one within the cooldown.

    The retrain flow checks again under the model's lock (this answer can be stale by then).
    """
    registry = open_registry(project)
    try:
        with registry.session() as session:
            last = last_retraining(session, params.gate.model_name)
    finally:
        registry.engine.dispose()
    return not _in_cooldown(last, when, params)


def _share_cache(workdir: Path, project: Path) -> None:
    """Create `workdir` with its cache folder linked to the project's, so that validation
    results are reused across retrainings of an unchanged source (a pure cache), without
    changing this process's environment (KEEL_CACHE_DIR, when set, wins everywhere)."""
    own = ProjectPaths(workdir).state_dir / "cache"
    own.parent.mkdir(parents=True, exist_ok=True)
    if not own.is_symlink() and not own.exists():
        shared = ProjectPaths(project).state_dir / "cache"
        shared.mkdir(parents=True, exist_ok=True)
        own.symlink_to(shared.resolve(), target_is_directory=True)


def _refit(
    project: Path, params: Params, when: dt.datetime, workdir: Path, candidate: int
) -> int | None:
    """Train and register the refit of `candidate`, which passed the gate (`retrain.refit`).

    The same recipe learns every label known at `when`, the gate window's too; there is no
    holdout left to measure it on, so it carries the candidate's metrics (and says so). If the
    refit fails, the gated candidate itself is promoted: None.
    """
    log = get_run_logger()
    refit_params = params_for_retrain(params, project, when, refit=True)
    refit_dir = workdir / "refit"
    _share_cache(refit_dir, project)
    try:
        for stage in STAGES:
            if stage != "evaluate":  # no holdout: the candidate's evaluation stands
                getattr(stages, stage)(refit_dir, refit_params)
        stages.inherit_metrics(refit_dir, workdir, candidate)
        version, new = register_model(refit_dir, refit_params, registry_root=project)
    except Exception as exc:  # the gated candidate is sound: it takes its place, said aloud
        log.warning(
            "refit of v%d failed (%s): the gated candidate itself takes its place", candidate, exc
        )
        return None
    if not new:  # the very model of an earlier version: its own record stays as it is
        log.warning(
            "the refit of v%d is v%d, registered before: the gated candidate takes its place",
            candidate,
            version,
        )
        return None
    return version


@flow(name="retrain")
def retrain_flow(
    root: str = ".",
    params_file: str = "params.yaml",
    as_of: dt.datetime | None = None,
    reason: str = "manual",
) -> dict[str, Any]:
    """Retrain on the labels known at `as_of`, then register and gate the challenger.

    Started by the `keel.drift.detected` / `keel.performance.degraded` automation. A second
    retraining within `retrain.cooldown_days` of logical time exits with 'skipped: cooldown'.
    This flow never emits a drift or performance event itself.
    """
    log = get_run_logger()
    project, params = _load(root, params_file)
    when = _as_of(as_of)
    name = params.gate.model_name
    registry = open_registry(project)
    with registry.session() as session, session.begin():
        repo.lock_model(session, name)  # check-and-record is one step: no double retraining
        last_as_of = last_retraining(session, name)
        if last_as_of is not None and _in_cooldown(last_as_of, when, params):
            message = (
                f"skipped: cooldown (last retraining as of {last_as_of.isoformat()}, "
                f"cooldown {params.retrain.cooldown_days:g} days)"
            )
            log.info(message)
            return {"status": message, "as_of": when.isoformat()}
        repo.record_event(
            session,
            name,
            None,
            "retrain",
            actor=registry.actor,
            reason=f"retraining as of {when.isoformat()}: {reason}",
            metrics={"as_of": when.isoformat()},
        )
    retrain_params = params_for_retrain(params, project, when)
    workdir = ProjectPaths(project).state_dir / "retrain" / when.strftime("%Y%m%dT%H%M%S")
    _share_cache(workdir, project)
    for stage in STAGES:
        getattr(stages, stage)(workdir, retrain_params)
    version, new = register_model(workdir, retrain_params, registry_root=project)
    if not new:
        log.info("retraining produced an already registered model (v%d): nothing to gate", version)
        return {"status": "model unchanged", "as_of": when.isoformat(), "version": version}
    refit = None
    if params.retrain.refit:
        decision = gate_candidate(workdir, retrain_params, version, registry_root=project)
        if decision.passed:
            refit = _refit(project, params, when, workdir, version)
        refit_of = version if refit is not None else None
        adopt_decision(project, retrain_params, refit or version, decision, refit_of=refit_of)
    else:
        decision = apply_decision(workdir, retrain_params, version, registry_root=project)
    summary = f"Registered v{version}: {decision.summary()}"
    if refit is not None:
        summary += f"\n\nRefit with the gate window's labels too, as v{refit}, in its place."
    elif params.retrain.refit and decision.passed:
        summary += "\n\n**The refit failed** (see the log): the gated candidate takes its place."
    create_markdown_artifact(
        key="retrain",
        markdown=f"# Retraining as of {when.isoformat()}\n\nReason: {reason}\n\n{summary}\n",
    )
    final = refit or version
    publish_dashboard_link("dashboard-model", f"models/{final}", f"{name} v{final}")
    return {
        "status": "retrained",
        "as_of": when.isoformat(),
        "version": final,
        "candidate": version,
        "decision": {**decision.to_json(), "summary": decision.summary()},
    }
