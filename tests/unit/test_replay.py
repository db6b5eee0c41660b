"""The replay's arithmetic: steps, monthly figures, targets and the rendered report."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from keel.config import ReplayTargets, load_params
from keel.replay import (
    MonthFigures,
    StrategyResult,
    check_targets,
    monthly_figures,
    render_chart,
    render_html,
    replay_steps,
)
from tasks.replay import strategy_params


def test_steps_start_at_start_and_cover_the_end() -> None:
    steps = replay_steps(dt.date(2016, 7, 1), dt.date(2017, 8, 31), 7)
    assert steps[0] == dt.datetime(2016, 7, 1, tzinfo=dt.UTC)
    assert steps[-1] >= dt.datetime(2017, 8, 31, tzinfo=dt.UTC) > steps[-2]
    assert len(steps) == 62
    assert all(b - a == dt.timedelta(days=7) for a, b in itertools.pairwise(steps))


def test_steps_refuse_an_end_before_the_start() -> None:
    with pytest.raises(ValueError, match="before its start"):
        replay_steps(dt.date(2016, 7, 1), dt.date(2016, 6, 1), 7)


def test_monthly_figures_match_sklearn_per_month() -> None:
    rng = np.random.default_rng(0)
    months = pd.Series(["2016-08"] * 50 + ["2016-07"] * 50)
    labels = pd.Series(rng.integers(0, 2, 100))
    scores = pd.Series(np.clip(labels * 0.3 + rng.random(100) * 0.7, 0, 1))
    figures = monthly_figures(months, labels, scores, threshold=0.5)
    assert [f.month for f in figures] == ["2016-07", "2016-08"]
    july = figures[0]
    assert july.rows == 50 and july.positives == int(labels[50:].sum())
    assert july.roc_auc == pytest.approx(roc_auc_score(labels[50:], scores[50:]))
    decided = scores[50:] >= 0.5
    assert july.precision == pytest.approx((labels[50:][decided] == 1).mean())


def test_a_month_with_one_class_has_no_auc() -> None:
    figures = monthly_figures(
        pd.Series(["2016-07"] * 3), pd.Series([1, 1, 1]), pd.Series([0.2, 0.6, 0.9]), 0.5
    )
    assert figures[0].roc_auc is None and figures[0].recall == pytest.approx(2 / 3)


def _result(name: str, aucs: list[float], retrainings: int = 0) -> StrategyResult:
    months = [
        MonthFigures(f"2017-{i + 1:02d}", 100, 40, auc, 0.4, 0.7, 0.6) for i, auc in enumerate(aucs)
    ]
    return StrategyResult(name, months, retrainings=["2017-01-01"] * retrainings)


def test_targets_hold_and_miss_by_the_numbers() -> None:
    results = {
        "static": _result("static", [0.86, 0.79, 0.78]),
        "scheduled": _result("scheduled", [0.90, 0.89, 0.88], retrainings=3),
        "keel": _result("keel", [0.90, 0.885, 0.885], retrainings=2),
    }
    checks = {c.name: c for c in check_targets(results, ReplayTargets())}
    assert checks["keel mean monthly ROC AUC"].holds
    assert checks["keel worst month ROC AUC"].holds
    assert checks["keel retrainings"].holds and checks["keel retrainings"].measured == "2"
    assert checks["keel mean AUC vs scheduled"].holds
    assert checks["static decays (last 2 months)"].holds
    worse = {**results, "keel": _result("keel", [0.88, 0.83, 0.87], retrainings=9)}
    missed = {c.name for c in check_targets(worse, ReplayTargets()) if not c.holds}
    assert missed == {
        "keel mean monthly ROC AUC",
        "keel worst month ROC AUC",
        "keel retrainings",
        "keel mean AUC vs scheduled",
    }


def test_static_that_does_not_decay_is_flagged() -> None:
    checks = check_targets({"static": _result("static", [0.9, 0.85, 0.81])}, ReplayTargets())
    assert [c.holds for c in checks] == [False]


def test_report_and_chart_are_written(tmp_path: Path) -> None:
    results = {
        "static": _result("static", [0.86, 0.79]),
        "keel": StrategyResult(
            "keel",
            _result("keel", [0.9, 0.88]).months,
            retrainings=["2017-01-15"],
            promotions=["2017-01-15"],
        ),
    }
    chart = tmp_path / "chart.png"
    render_chart(results, {"lead_time": [("2017-01-08", 0.1), ("2017-02-05", 0.3)]}, chart, "t")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    summary = {
        "start": "2017-01-01",
        "end": "2017-02-28",
        "step_days": 7,
        "month_by": "arrival_date",
        "generated_at": "now",
        "wall_seconds": 1.0,
        "strategies": {name: r.to_json() for name, r in results.items()},
    }
    checks = check_targets(results, ReplayTargets())
    page = render_html(summary, checks, "chart.png", "http://127.0.0.1:4200")
    assert "<td>2017-02</td><td>0.7900</td><td>100</td><td>0.8800</td>" in page
    assert "missed" in page and 'src="chart.png"' in page and "2017-01-15" in page


def test_the_replay_can_store_other_reason_codes_than_production(tmp_path: Path) -> None:
    shipped = load_params(Path(__file__).parents[2] / "params.yaml")
    exact = shipped.model_copy(
        update={"replay": shipped.replay.model_copy(update={"reason_method": None})}
    )
    assert exact.score.reason_method == "shap"
    assert strategy_params(exact, tmp_path, "keel").score.reason_method == "shap"
    approx = exact.model_copy(
        update={"replay": exact.replay.model_copy(update={"reason_method": "approx"})}
    )
    own = strategy_params(approx, tmp_path, "static")
    assert own.score.reason_method == "approx"
    assert own.score.include_resolved == approx.replay.score_as_made
    assert approx.score.reason_method == "shap"  # production's setting is not touched
