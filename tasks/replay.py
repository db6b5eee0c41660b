"""Replay tasks: give each strategy its own project state, seed its champion, read its results.

Every strategy of a replay is a project of its own under `.keel/replay/<strategy>/` (its own
params, database, registry and artifact store), so the production flows run on it unchanged.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from prefect import task
from sqlalchemy import select
from sqlalchemy.orm import Session

from keel.config import Params
from keel.registry import repository as repo
from keel.replay import StrategyResult, monthly_figures
from keel.store import DriftResult, Outcome, Prediction
from keel.table import ORDER_TIME
from tasks.io import run_logger, write_text
from tasks.production import as_utc, load_records
from tasks.registry import apply_decision, open_registry, register_model

__all__ = [
    "collect_strategy",
    "drift_series",
    "prepare_strategy",
    "seed_champion",
    "strategy_params",
]

INITIAL_REASON = "initial champion"


def strategy_params(params: Params, project: Path, strategy: str) -> Params:
    """The params of one strategy: its own model name, absolute source and suite paths.

    The replay drives simulated time much faster than a live deployment, so the retrain
    automation's quiet period is one second; the cooldown in logical days is what keeps
    `keel` from retraining on every event. `scheduled` retrains on its calendar, so its
    cooldown is off. With `replay.score_as_made`, each step scores every record made in it
    with what was known when it was made (`score.include_resolved`), as continuous production
    would have. `replay.reason_method`, when set, is the strategies' `score.reason_method`.
    """
    retrain = params.retrain.model_copy(
        update={
            "trigger_within_seconds": 1,
            **({"cooldown_days": 0.0} if strategy == "scheduled" else {}),
        }
    )
    return params.model_copy(
        update={
            "gate": params.gate.model_copy(
                update={"model_name": f"{params.gate.model_name}-{strategy}"}
            ),
            "ingest": params.ingest.model_copy(
                update={"source": str((project / params.ingest.source).resolve())}
            ),
            "validate_": params.validate_.model_copy(
                update={"suite": str((project / params.validate_.suite).resolve())}
            ),
            "retrain": retrain,
            "score": params.score.model_copy(
                update={
                    "include_resolved": params.replay.score_as_made,
                    "reason_method": params.replay.reason_method or params.score.reason_method,
                }
            ),
        }
    )


def prepare_strategy(state: Path, project: Path, params: Params, strategy: str) -> Path:
    """Create a strategy's project folder from scratch (earlier replay state is removed)."""
    root = state / strategy
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    own = strategy_params(params, project, strategy)
    write_text(
        root / "params.yaml",
        yaml.safe_dump(own.model_dump(mode="json", by_alias=True), sort_keys=False),
    )
    return root


@task(name="seed-champion")
def seed_champion(workdir: Path, root: Path, params: Params, as_of: dt.datetime) -> int:
    """Register the model trained in `workdir` as a strategy's first champion.

    The initial training counts as the strategy's latest training (an audited `retrain`
    event as of `as_of`), so the retraining cooldown starts at the replay's start.
    """
    version, _ = register_model.fn(workdir, params, registry_root=root)
    apply_decision.fn(workdir, params, version, registry_root=root)
    registry = open_registry(root)
    with registry.session() as session, session.begin():
        repo.record_event(
            session,
            params.gate.model_name,
            version,
            "retrain",
            actor=registry.actor,
            reason=f"{INITIAL_REASON} as of {as_utc(as_of).isoformat()}",
            metrics={"as_of": as_utc(as_of).isoformat()},
        )
    return version


def _logical_date(version_params: dict[str, Any]) -> str:
    """The as_of a retraining ran at: its gate window ends the day before."""
    end = dt.date.fromisoformat(version_params["featurize"]["split"]["holdout_end"])
    return (end + dt.timedelta(days=1)).isoformat()


@task(name="collect-strategy")
def collect_strategy(
    root: Path, params: Params, strategy: str, first_month: dt.date, last_month: dt.date
) -> StrategyResult:
    """Read a strategy's store and registry: monthly accuracy, retrainings, gate outcomes.

    Each record's score is the first one it got (scored in the step it was made, before its
    outcome was known); the month is that of the split time (the hotel data: arrival), and
    only the months from `first_month` to `last_month` are compared (records arriving later
    were scored too, but the replay ends before their month is complete).
    """
    registry = open_registry(root)
    name = params.gate.model_name
    with Session(registry.engine) as session:
        rows = session.execute(
            select(Prediction.entity_key, Prediction.score, Prediction.as_of, Outcome.label)
            .join(Outcome, Outcome.entity_key == Prediction.entity_key)
            .where(Prediction.model_name == name)
        ).all()
        versions = repo.list_versions(session, name)
        events = repo.audit_log(session, name)
    scored = pd.DataFrame(rows, columns=["entity_key", "score", "as_of", "label"])
    first = scored.sort_values("as_of").drop_duplicates("entity_key", keep="first")
    feed = load_records(root, params)
    key = params.data.entity_key.name
    when = feed.set_index(feed[key].astype(str))[ORDER_TIME]
    months = pd.Series(when.reindex(first["entity_key"]).dt.strftime("%Y-%m").to_numpy())
    inside = months.between(f"{first_month:%Y-%m}", f"{last_month:%Y-%m}").to_numpy()
    figures = monthly_figures(
        months[inside],
        first["label"][inside],
        first["score"][inside],
        params.evaluate.threshold,
    )
    retrainings = [
        str(e.metrics["as_of"])[:10]
        for e in events
        if e.event == "retrain" and not e.reason.startswith(INITIAL_REASON)
    ]
    promotions = [_logical_date(v.params) for v in versions[1:] if v.gate_outcome == "promote"]
    rejections = [_logical_date(v.params) for v in versions[1:] if v.gate_outcome == "reject"]
    run_logger().info(
        "%s: %d records scored, %d retrainings, %d promotions",
        strategy,
        len(first),
        len(retrainings),
        len(promotions),
    )
    return StrategyResult(
        strategy=strategy,
        months=figures,
        retrainings=retrainings,
        promotions=promotions,
        rejections=rejections,
        scored=len(first),
    )


@task(name="drift-series")
def drift_series(root: Path, params: Params, top: int = 5) -> dict[str, list[tuple[str, float]]]:
    """PSI over time of the `top` features that drifted most (by their largest PSI)."""
    registry = open_registry(root)
    with Session(registry.engine) as session:
        rows = session.execute(
            select(DriftResult.feature, DriftResult.as_of, DriftResult.value).where(
                DriftResult.model_name == params.gate.model_name,
                DriftResult.statistic == "psi",
                DriftResult.feature != "__score__",
            )
        ).all()
    frame = pd.DataFrame(rows, columns=["feature", "as_of", "psi"])
    if frame.empty:
        return {}
    leaders = frame.groupby("feature")["psi"].max().sort_values(ascending=False).index[:top]
    return {
        str(feature): [
            (pd.Timestamp(t).strftime("%Y-%m-%d"), round(float(v), 4))
            for t, v in frame[frame["feature"] == feature]
            .sort_values("as_of")[["as_of", "psi"]]
            .itertuples(index=False)
        ]
        for feature in leaders
    }
