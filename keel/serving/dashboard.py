"""What the dashboard shows, read from the registry and the prediction store.

Each function takes a `Session` and returns plain JSON values: Plotly figures (`data` and
`layout`, drawn by the Plotly JavaScript served with the page) or table rows. Aggregation runs
in the database (volume per day, the score histogram), so a large prediction table is never
read into memory.

Times are on the axis of logical dates (`as_of`): a monitoring window at its end, a retraining
at its `as_of`, a promotion at the `as_of` of the retraining that made the version (or where
its training labels end, for a version trained by hand). That is wall-clock time for live
schedules, and stays readable for a replay or a backfill, whose logical dates are years before
the day it ran. Served (API) predictions are dated when they were served.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from keel.registry import repository as repo
from keel.registry.models import ModelVersion
from keel.store import DriftResult, MonitoringMetric, Prediction

__all__ = [
    "SCORE_BINS",
    "audit_rows",
    "drift_figure",
    "drift_table",
    "flow_run_url",
    "performance_figure",
    "score_figure",
    "version_rows",
    "volume_figure",
]

SCORE_BINS = 20
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


def _stamp(value: dt.datetime) -> str:
    """A UTC time as Plotly reads dates ('YYYY-MM-DD HH:MM:SS'); SQLite gives naive UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def flow_run_url(prefect_ui: str | None, flow_run_id: str | None) -> str | None:
    """The Prefect UI page of a flow run, when both are known."""
    if not prefect_ui or not flow_run_id:
        return None
    return f"{prefect_ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


def _markers(session: Session, model_name: str) -> list[dict[str, Any]]:
    """Retraining and promotion events on the logical-date axis, oldest first.

    A promotion is drawn at the `as_of` of the retraining that made the version, or, for a
    version trained by hand, where its training labels end (`labels_known_by`).
    """
    versions = {v.version: v for v in repo.list_versions(session, model_name)}
    markers = []
    retraining: dt.datetime | None = None  # the retraining whose model is registered next
    made_at: dict[int, dt.datetime] = {}
    for event in repo.audit_log(session, model_name):
        if event.event == "retrain" and isinstance(event.metrics.get("as_of"), str):
            retraining = dt.datetime.fromisoformat(event.metrics["as_of"])
            markers.append({"kind": "retraining", "x": _stamp(retraining), "text": "retraining"})
        elif event.event == "registered" and event.version is not None:
            if retraining is not None:
                made_at[event.version] = retraining
            retraining = None
        elif event.event == "promoted" and event.version in versions:
            at = made_at.get(event.version)
            known = (versions[event.version].training_window or {}).get("labels_known_by")
            if at is None and known:
                at = dt.datetime.fromisoformat(str(known))
            if at is not None:
                markers.append(
                    {"kind": "promotion", "x": _stamp(at), "text": f"v{event.version} promoted"}
                )
    return markers


def performance_figure(session: Session, model_name: str, metric: str) -> dict[str, Any]:
    """The monitored metric per window, one line per model version, with event markers.

    Args:
        session: An open session on the Keel database.
        model_name: The registered model.
        metric: The metric to draw (the gate's primary metric, e.g. `roc_auc`).

    Returns:
        A Plotly figure; `layout.meta.markers` lists the markers drawn.
    """
    rows = session.execute(
        select(MonitoringMetric.as_of, MonitoringMetric.model_version, MonitoringMetric.value)
        .where(MonitoringMetric.model_name == model_name, MonitoringMetric.metric == metric)
        .order_by(MonitoringMetric.as_of, MonitoringMetric.id)
    ).all()
    latest: dict[tuple[int, str], float | None] = {}
    for as_of, version, value in rows:  # a window measured twice: its last measurement
        latest[(version, _stamp(as_of))] = value
    by_version: dict[int, list[tuple[str, float | None]]] = defaultdict(list)
    for (version, stamp), value in sorted(latest.items(), key=lambda kv: kv[0][1]):
        by_version[version].append((stamp, value))
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": f"v{version}",
            "x": [x for x, _ in points],
            "y": [y for _, y in points],
            "line": {"color": _COLORS[(version - 1) % len(_COLORS)]},
            "hovertemplate": f"v{version}<br>%{{x}}<br>{metric} %{{y:.4f}}<extra></extra>",
        }
        for version, points in sorted(by_version.items())
    ]
    markers = _markers(session, model_name)
    shapes = [
        {
            "type": "line",
            "xref": "x",
            "yref": "paper",
            "x0": m["x"],
            "x1": m["x"],
            "y0": 0,
            "y1": 1,
            "line": {"dash": "dot" if m["kind"] == "retraining" else "dash", "width": 1.5},
        }
        for m in markers
    ]
    annotations = [
        {
            "x": m["x"],
            "xref": "x",
            "y": 1.0 if m["kind"] == "promotion" else 0.92,
            "yref": "paper",
            "text": m["text"],
            "showarrow": False,
            "xanchor": "left",
            "font": {"size": 10},
        }
        for m in markers
    ]
    return {
        "data": data,
        "layout": {
            "title": {"text": f"{metric} per monitoring window, by model version"},
            "xaxis": {"title": {"text": "window end (as_of)"}, "type": "date"},
            "yaxis": {"title": {"text": metric}},
            "shapes": shapes,
            "annotations": annotations,
            "meta": {"markers": markers},
            "margin": {"t": 50, "r": 20},
            "legend": {"orientation": "h"},
        },
    }


def _psi_rows(session: Session, model_name: str) -> dict[tuple[str, str], float]:
    rows = session.execute(
        select(DriftResult.as_of, DriftResult.feature, DriftResult.value)
        .where(DriftResult.model_name == model_name, DriftResult.statistic == "psi")
        .order_by(DriftResult.id)
    ).all()
    return {(_stamp(as_of), feature): value for as_of, feature, value in rows}


def drift_figure(session: Session, model_name: str, threshold: float) -> dict[str, Any]:
    """A heatmap of PSI: one row per feature (and the score), one column per window.

    Args:
        session: An open session on the Keel database.
        model_name: The registered model.
        threshold: The drift threshold (`monitor.psi_threshold`), shown in the title.

    Returns:
        A Plotly figure; a window measured twice shows its last measurement, and a feature
        not measured in a window is null.
    """
    values = _psi_rows(session, model_name)
    windows = sorted({w for w, _ in values})
    features = sorted({f for _, f in values}, key=lambda f: (f == "__score__", f))
    z = [[values.get((w, f)) for w in windows] for f in features]
    return {
        "data": [
            {
                "type": "heatmap",
                "x": windows,
                "y": features,
                "z": z,
                "zmin": 0,
                "zmax": max(threshold * 2, max((v for v in values.values()), default=0)),
                "colorscale": "YlOrRd",
                "reversescale": True,  # Plotly's YlOrRd runs red to yellow: red is drift
                "colorbar": {"title": {"text": "PSI"}},
                "hovertemplate": "%{y}<br>window ending %{x}<br>PSI %{z:.4f}<extra></extra>",
            }
        ],
        "layout": {
            "title": {"text": f"Drift (PSI) per feature and window; drifted above {threshold:g}"},
            "xaxis": {"title": {"text": "window end (as_of)"}, "type": "category"},
            "yaxis": {"automargin": True, "type": "category"},
            "height": max(360, 22 * len(features) + 140),
            "margin": {"t": 50, "r": 20},
        },
    }


def drift_table(
    session: Session, model_name: str, as_of: dt.datetime | None
) -> tuple[str | None, list[dict[str, Any]]]:
    """Every drift statistic of one window (the latest when `as_of` is None), worst first.

    Returns:
        The window end shown, and its rows (feature, statistic, value, threshold, drifted).
    """
    query = select(func.max(DriftResult.as_of)).where(DriftResult.model_name == model_name)
    if as_of is not None:
        query = query.where(DriftResult.as_of <= as_of)
    window = session.scalar(query)
    if window is None:
        return None, []
    results = session.scalars(
        select(DriftResult)
        .where(DriftResult.model_name == model_name, DriftResult.as_of == window)
        .order_by(DriftResult.id)
    ).all()
    latest = {(r.feature, r.statistic): r for r in results}
    ordered = sorted(
        latest.values(),
        key=lambda r: (not r.drifted, -(r.value / r.threshold if r.threshold else r.value)),
    )
    rows = [
        {
            "feature": r.feature,
            "statistic": r.statistic,
            "value": r.value,
            "threshold": r.threshold,
            "drifted": r.drifted,
            "model_version": r.model_version,
        }
        for r in ordered
    ]
    return _stamp(window), rows


def volume_figure(session: Session, model_name: str) -> dict[str, Any]:
    """Predictions per day, batch (`score` flow) and served (API) apart."""
    source = case((Prediction.batch_id.like("api:%"), "api"), else_="batch")
    day = func.date(Prediction.as_of)
    rows = session.execute(
        select(day, source, func.count())
        .where(Prediction.model_name == model_name)
        .group_by(day, source)
        .order_by(day)
    ).all()
    days = sorted({str(when)[:10] for when, _, _ in rows})
    series: dict[str, dict[str, int]] = {"batch": {}, "api": {}}
    for when, kind, count in rows:
        series[kind][str(when)[:10]] = int(count)
    return {
        "data": [
            {
                "type": "bar",
                "name": "batch (score flow)" if kind == "batch" else "served (API)",
                "x": days,
                "y": [counts.get(day, 0) for day in days],
                "meta": {"source": kind},
            }
            for kind, counts in series.items()
            if counts
        ],
        "layout": {
            "title": {"text": "Predictions per day (by as_of)"},
            "barmode": "stack",
            # Days as categories: batch days of a replay and today's API traffic stay legible.
            "xaxis": {"title": {"text": "day"}, "type": "category"},
            "yaxis": {"title": {"text": "predictions"}},
            "margin": {"t": 50, "r": 20},
            "legend": {"orientation": "h"},
        },
    }


def score_figure(session: Session, model_name: str, window_days: float) -> dict[str, Any]:
    """The score distribution of the latest `window_days` of predictions, per model version.

    Returns:
        A Plotly bar figure of `SCORE_BINS` equal bins on [0, 1] (the last bin includes 1);
        `layout.meta` holds the window.
    """
    end = session.scalar(
        select(func.max(Prediction.as_of)).where(Prediction.model_name == model_name)
    )
    if end is None:
        return {"data": [], "layout": {"meta": {"start": None, "end": None}}}
    start = end - dt.timedelta(days=window_days)
    width = 1.0 / SCORE_BINS
    bins = [
        func.sum(
            case(
                (
                    and_(
                        Prediction.score >= k * width,
                        Prediction.score < (k + 1) * width
                        if k < SCORE_BINS - 1
                        else Prediction.score <= 1.0,
                    ),
                    1,
                ),
                else_=0,
            )
        )
        for k in range(SCORE_BINS)
    ]
    rows = session.execute(
        select(Prediction.model_version, *bins)
        .where(
            Prediction.model_name == model_name,
            Prediction.as_of > start,
            Prediction.as_of <= end,
        )
        .group_by(Prediction.model_version)
        .order_by(Prediction.model_version)
    ).all()
    centers = [round((k + 0.5) * width, 6) for k in range(SCORE_BINS)]
    return {
        "data": [
            {
                "type": "bar",
                "name": f"v{row[0]}",
                "x": centers,
                "y": [int(c or 0) for c in row[1:]],
                "width": width * 0.95,
                "marker": {"color": _COLORS[(row[0] - 1) % len(_COLORS)]},
            }
            for row in rows
        ],
        "layout": {
            "title": {"text": f"Score distribution, {window_days:g} days to {_stamp(end)[:10]}"},
            "barmode": "group",
            "xaxis": {"title": {"text": "score"}, "range": [0, 1]},
            "yaxis": {"title": {"text": "predictions"}},
            "meta": {"start": _stamp(start), "end": _stamp(end)},
            "margin": {"t": 50, "r": 20},
            "legend": {"orientation": "h"},
        },
    }


def audit_rows(session: Session, model_name: str, limit: int = 30) -> list[dict[str, Any]]:
    """The newest audit events, newest first."""
    events = repo.audit_log(session, model_name, limit=limit)
    return [
        {
            "at": _stamp(e.at),
            "event": e.event,
            "version": e.version,
            "actor": e.actor,
            "reason": e.reason,
        }
        for e in reversed(events)
    ]


def version_rows(
    session: Session, model_name: str, prefect_ui: str | None, primary_metric: str
) -> list[dict[str, Any]]:
    """Every version, newest first, with its aliases, primary metric and Prefect run link."""
    holders: dict[int, list[str]] = defaultdict(list)
    for alias in repo.ALIASES:
        row = repo.get_alias(session, model_name, alias)
        if row is not None:
            holders[row.version].append(alias)
    out = []
    for v in reversed(repo.list_versions(session, model_name)):
        out.append(
            {
                "version": v.version,
                "created_at": _stamp(v.created_at),
                "created_by": v.created_by,
                "aliases": holders.get(v.version, []),
                "metric": (v.metrics.get("holdout") or {}).get(primary_metric),
                "gate": v.gate_outcome,
                "labels_known_by": (v.training_window or {}).get("labels_known_by"),
                "commit": (v.code_version or {}).get("commit"),
                "flow_run_url": flow_run_url(prefect_ui, v.flow_run_id),
            }
        )
    return out


def champion(session: Session, model_name: str) -> ModelVersion | None:
    """The registry's current champion row."""
    return repo.get_alias(session, model_name, "champion")
