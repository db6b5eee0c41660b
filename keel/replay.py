"""The replay's arithmetic: simulated steps, monthly metrics, targets, and the report.

A replay walks simulated time and runs the production flows at each step; this module holds
the parts that need no orchestration: which logical dates the steps are, how the scored
records turn into per-month figures, which targets hold, and how the result is rendered (a
terminal table is the CLI's job; here the JSON summary, the HTML report and the PNG chart).
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from keel.config import ReplayTargets

__all__ = [
    "MonthFigures",
    "StrategyResult",
    "TargetCheck",
    "check_targets",
    "monthly_figures",
    "render_chart",
    "render_html",
    "replay_steps",
]


def replay_steps(start: dt.date, end: dt.date, step_days: int) -> list[dt.datetime]:
    """The logical dates of a replay: `start`, then every `step_days`, until `end` is covered.

    Each step as of T handles the records made in (T - step, T], so the last step is the first
    T on or after `end`.
    """
    if end < start:
        raise ValueError(f"replay end {end} is before its start {start}")
    first = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
    last = dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC)
    steps = [first]
    while steps[-1] < last:
        steps.append(steps[-1] + dt.timedelta(days=step_days))
    return steps


@dataclass(frozen=True)
class MonthFigures:
    """One strategy's accuracy on the records of one month (by the split time, e.g. arrival)."""

    month: str
    rows: int
    positives: int
    roc_auc: float | None
    log_loss: float | None
    precision: float | None
    recall: float | None


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def monthly_figures(
    months: pd.Series, labels: pd.Series, scores: pd.Series, threshold: float
) -> list[MonthFigures]:
    """Per month: rows, positives, ROC AUC, log loss, precision and recall at the threshold.

    Args:
        months: The month of each record (a `YYYY-MM` string).
        labels: The true labels (0/1).
        scores: The score each record got when it was scored.
        threshold: The decision threshold.

    Returns:
        One entry per month in calendar order; AUC is None for a month with one class only.
    """
    frame = pd.DataFrame(
        {
            "month": months.to_numpy(),
            "y": labels.to_numpy(dtype="int64"),
            "p": scores.to_numpy(dtype="float64"),
        }
    )
    out = []
    for month, part in frame.groupby("month", sort=True):
        y, p = part["y"].to_numpy(), part["p"].to_numpy()
        both = 0 < y.sum() < len(y)
        decided = p >= threshold
        true_pos = int((decided & (y == 1)).sum())
        out.append(
            MonthFigures(
                month=str(month),
                rows=len(part),
                positives=int(y.sum()),
                roc_auc=float(roc_auc_score(y, p)) if both else None,
                log_loss=float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
                precision=_ratio(true_pos, int(decided.sum())),
                recall=_ratio(true_pos, int(y.sum())),
            )
        )
    return out


@dataclass(frozen=True)
class StrategyResult:
    """What one strategy did over the replay and how accurate it was, month by month."""

    strategy: str
    months: list[MonthFigures]
    retrainings: list[str] = field(default_factory=list)  # logical dates
    promotions: list[str] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    scored: int = 0

    @property
    def mean_auc(self) -> float | None:
        """The mean of the monthly ROC AUCs."""
        values = [m.roc_auc for m in self.months if m.roc_auc is not None]
        return float(np.mean(values)) if values else None

    @property
    def min_auc(self) -> float | None:
        """The worst monthly ROC AUC."""
        values = [m.roc_auc for m in self.months if m.roc_auc is not None]
        return float(min(values)) if values else None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe, with the headline figures."""
        return {
            **asdict(self),
            "mean_auc": self.mean_auc,
            "min_auc": self.min_auc,
            "retrain_count": len(self.retrainings),
        }


@dataclass(frozen=True)
class TargetCheck:
    """One target, the figure measured for it, and whether it holds."""

    name: str
    target: str
    measured: str
    holds: bool


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def check_targets(results: dict[str, StrategyResult], targets: ReplayTargets) -> list[TargetCheck]:
    """Check the targets that apply to the strategies present."""
    checks = []
    keel, scheduled, static = (results.get(s) for s in ("keel", "scheduled", "static"))
    if keel is not None:
        mean, worst = keel.mean_auc, keel.min_auc
        checks += [
            TargetCheck(
                "keel mean monthly ROC AUC",
                f">= {targets.min_mean_auc}",
                _fmt(mean),
                mean is not None and mean >= targets.min_mean_auc,
            ),
            TargetCheck(
                "keel worst month ROC AUC",
                f">= {targets.min_month_auc}",
                _fmt(worst),
                worst is not None and worst >= targets.min_month_auc,
            ),
            TargetCheck(
                "keel retrainings",
                f"<= {targets.max_retrains}",
                str(len(keel.retrainings)),
                len(keel.retrainings) <= targets.max_retrains,
            ),
        ]
        if scheduled is not None and mean is not None and scheduled.mean_auc is not None:
            gap = scheduled.mean_auc - mean
            checks.append(
                TargetCheck(
                    "keel mean AUC vs scheduled",
                    f"not lower by more than {targets.max_gap_to_scheduled}",
                    f"{-gap:+.4f}",
                    gap <= targets.max_gap_to_scheduled,
                )
            )
    if static is not None:
        last = static.months[-targets.static_decay_months :]
        values = [m.roc_auc for m in last]
        checks.append(
            TargetCheck(
                f"static decays (last {targets.static_decay_months} months)",
                f"< {targets.static_decay_below}",
                ", ".join(_fmt(v) for v in values),
                bool(values)
                and all(v is not None and v < targets.static_decay_below for v in values),
            )
        )
    return checks


_COLOURS = {"static": "#7f7f7f", "scheduled": "#1f77b4", "keel": "#d62728"}


def render_chart(
    results: dict[str, StrategyResult],
    drift: dict[str, list[tuple[str, float]]],
    path: Path,
    title: str,
) -> None:
    """Monthly AUC per strategy with retraining and promotion markers; drifting features below.

    Args:
        results: Per strategy.
        drift: Feature -> [(window end date, PSI)], the top drifting features.
        path: The PNG to write.
        title: The chart's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 8), height_ratios=[3, 2], constrained_layout=True
    )
    every_auc = [m.roc_auc for r in results.values() for m in r.months if m.roc_auc is not None]
    low, high = (min(every_auc), max(every_auc)) if every_auc else (0.5, 1.0)
    span = max(high - low, 0.02)
    floor = low - 0.25 * span  # room under the lowest month for the promotion markers
    top.set_ylim(floor, high + 0.05 * span)
    for row, (name, result) in enumerate(results.items()):
        months = [pd.Timestamp(m.month) + pd.Timedelta(days=14) for m in result.months]
        aucs = [np.nan if m.roc_auc is None else m.roc_auc for m in result.months]
        colour = _COLOURS.get(name)
        top.plot(
            months, aucs, marker="o", color=colour, label=f"{name} (mean {_fmt(result.mean_auc)})"
        )
        for day in result.retrainings:
            top.axvline(pd.Timestamp(day), color=colour, alpha=0.25, linestyle=":")
        promoted = [pd.Timestamp(d) for d in result.promotions]
        if promoted:
            top.scatter(
                promoted,
                [floor + (0.04 + 0.06 * row) * span] * len(promoted),
                marker="^",
                color=colour,
                s=60,
                zorder=3,
            )
    top.set_ylabel("ROC AUC by month")
    top.set_title(f"{title}\n(dotted: retrainings; triangles: promotions)")
    top.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=len(results) or 1)
    top.grid(alpha=0.3)
    for feature, points in drift.items():
        bottom.plot([pd.Timestamp(d) for d, _ in points], [v for _, v in points], label=feature)
    bottom.set_ylabel("PSI vs the records made\nbefore the first model")
    bottom.set_title("Top drifting features")
    if drift:
        bottom.legend(loc="upper left", fontsize="small")
    bottom.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return _fmt(value)
    return html.escape("n/a" if value is None else str(value))


def render_html(
    summary: dict[str, Any], checks: Sequence[TargetCheck], chart_name: str, ui_url: str | None
) -> str:
    """A self-contained HTML report: targets, the chart, and the table per strategy and month."""
    strategies: dict[str, Any] = summary["strategies"]
    months = sorted({m["month"] for s in strategies.values() for m in s["months"]})
    head = "".join(f"<th>{html.escape(n)} AUC</th><th>{html.escape(n)} n</th>" for n in strategies)
    body = []
    for month in months:
        cells = []
        for s in strategies.values():
            row: dict[str, Any] = next((m for m in s["months"] if m["month"] == month), {})
            cells.append(f"<td>{_cell(row.get('roc_auc'))}</td><td>{_cell(row.get('rows'))}</td>")
        body.append(f"<tr><td>{month}</td>{''.join(cells)}</tr>")
    headline = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{_cell(s['mean_auc'])}</td><td>{_cell(s['min_auc'])}</td>"
        f"<td>{s['retrain_count']}</td><td>{len(s['promotions'])}</td><td>{len(s['rejections'])}</td>"
        f"<td>{_cell(', '.join(s['retrainings']) or '-')}</td></tr>"
        for n, s in strategies.items()
    )
    target_rows = "".join(
        f"<tr class={'ok' if c.holds else 'miss'}><td>{html.escape(c.name)}</td>"
        f"<td>{html.escape(c.target)}</td><td>{html.escape(c.measured)}</td>"
        f"<td>{'holds' if c.holds else 'missed'}</td></tr>"
        for c in checks
    )
    ui = (
        f'<p>Prefect UI: <a href="{html.escape(ui_url)}">{html.escape(ui_url)}</a></p>'
        if ui_url
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keel replay</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.ok td:last-child {{ color: #1a7f37; }}
tr.miss td:last-child {{ color: #cf222e; font-weight: bold; }}
</style></head><body>
<h1>Keel replay: {html.escape(summary["start"])} to {html.escape(summary["end"])}</h1>
<p>Every {summary["step_days"]} days of simulated time, each strategy records the outcomes known
by then, scores the records made in the step with its champion, and monitors. Figures are by
month of <code>{html.escape(summary["month_by"])}</code>; every record is scored once, before
its outcome is known. Generated {html.escape(summary["generated_at"])} in
{summary["wall_seconds"]:.0f} s.</p>{ui}
<h2>Targets</h2><table><tr><th>check</th><th>target</th><th>measured</th><th></th></tr>
{target_rows}</table>
<h2>Strategies</h2><table><tr><th>strategy</th><th>mean AUC</th><th>worst month</th>
<th>retrainings</th><th>promotions</th><th>rejections</th><th>retraining dates</th></tr>
{headline}</table>
<img src="{html.escape(chart_name)}" alt="Monthly ROC AUC per strategy" style="max-width:100%">
<h2>By month</h2><table><tr><th>month</th>{head}</tr>{"".join(body)}</table>
</body></html>
"""
