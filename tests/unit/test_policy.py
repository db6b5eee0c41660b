"""The promotion gate (`keel.registry.policy`), exhaustively, on small tables."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pydantic
import pytest

from keel.config import GateConfig
from keel.registry.policy import Decision, Evaluation, decide_promotion, metric_improvement

NAN = math.nan
HOTELS = ("City Hotel", "Resort Hotel")
SAME = dict.fromkeys(HOTELS, 0.9)  # slices identical on both sides: the guardrail passes

# min_improvement 0.002, max_slice_drop 0.02, brier may worsen by 0.005, no approval.
POLICY = GateConfig(
    primary_metric="roc_auc",
    min_improvement=0.002,
    max_slice_drop=0.02,
    calibration_metric="brier",
    max_calibration_worsening=0.005,
)


def ev(
    version: int | None,
    auc: float | None,
    *,
    brier: float | None = 0.13,
    hotels: Mapping[str, float] | None = None,
) -> Evaluation:
    """A binary evaluation; slices default to the overall AUC for both hotels."""
    metrics = {"rows": 1000.0, "log_loss": 0.4}
    if auc is not None:
        metrics["roc_auc"] = auc
    if brier is not None:
        metrics["brier"] = brier
    per_hotel = hotels if hotels is not None else dict.fromkeys(HOTELS, auc if auc else 0.0)
    slices = {"hotel": {h: {"roc_auc": v, "brier": 0.1} for h, v in per_hotel.items()}}
    return Evaluation(version, metrics, slices, "2016-07-01..2016-08-31 (1000 rows)")


def decide(candidate: Evaluation, champion: Evaluation | None, **policy: Any) -> Decision:
    return decide_promotion(candidate, champion, POLICY.model_copy(update=policy))


def has(decision: Decision, words: str) -> bool:
    return any(words in reason for reason in decision.reasons)


# --- the decision table ------------------------------------------------------------------------

CASES: list[tuple[str, Evaluation, Evaluation | None, dict[str, Any], str, str]] = [
    # id, candidate, champion, policy overrides, outcome, words in a reason
    (
        "better",
        ev(2, 0.900),
        ev(1, 0.890),
        {},
        "promote",
        "roc_auc 0.9000 vs champion 0.8900: +0.0100 (minimum +0.0020): better",
    ),
    (
        "worse",
        ev(2, 0.880),
        ev(1, 0.890),
        {},
        "reject",
        "roc_auc 0.8800 vs champion 0.8900: -0.0100 (minimum +0.0020): worse",
    ),
    (
        "equal",
        ev(2, 0.890),
        ev(1, 0.890),
        {},
        "reject",
        "+0.0000 (minimum +0.0020): equal within the margin",
    ),
    (
        "equal-within-margin",
        ev(2, 0.891),
        ev(1, 0.890),
        {},
        "reject",
        "roc_auc 0.8910 vs champion 0.8900: +0.0010 (minimum +0.0020): equal within the margin",
    ),
    (
        "just-below-minimum-shows-more-decimals",
        ev(2, 0.89199),
        ev(1, 0.890),
        {},
        "reject",
        "+0.00199 (minimum +0.00200)",
    ),
    (
        "exactly-at-minimum",
        ev(2, 0.892),
        ev(1, 0.890),
        {},
        "promote",
        "+0.0020 (minimum +0.0020): better",
    ),
    (
        # 0.102 - 0.100 == 0.001999999999999988 in floats: the tolerance lets it pass.
        "exactly-at-minimum-float-noise-below",
        ev(2, 0.102),
        ev(1, 0.100),
        {},
        "promote",
        "+0.0020 (minimum +0.0020): better",
    ),
    (
        "equal-with-zero-minimum",
        ev(2, 0.890),
        ev(1, 0.890),
        {"min_improvement": 0.0},
        "promote",
        "+0.0000 (minimum +0.0000): no worse, minimum met",
    ),
    (
        "slice-guardrail-breach-while-overall-better",
        ev(2, 0.910, hotels={"City Hotel": 0.93, "Resort Hotel": 0.85}),
        ev(1, 0.890, hotels={"City Hotel": 0.89, "Resort Hotel": 0.88}),
        {},
        "reject",
        "hotel=Resort Hotel roc_auc worse by 0.0300 (max 0.0200): 0.8500 vs champion 0.8800",
    ),
    (
        "slice-within-guardrail",
        ev(2, 0.910, hotels={"City Hotel": 0.93, "Resort Hotel": 0.865}),
        ev(1, 0.890, hotels={"City Hotel": 0.89, "Resort Hotel": 0.88}),
        {},
        "promote",
        "hotel=Resort Hotel roc_auc 0.8650 vs champion 0.8800: change -0.0150 "
        "(may worsen by at most 0.0200): ok",
    ),
    (
        # 0.88 - 0.86 == 0.020000000000000018 in floats: exactly at the limit still passes.
        "slice-exactly-at-guardrail",
        ev(2, 0.910, hotels={"City Hotel": 0.93, "Resort Hotel": 0.86}),
        ev(1, 0.890, hotels={"City Hotel": 0.89, "Resort Hotel": 0.88}),
        {},
        "promote",
        "hotel=Resort Hotel roc_auc 0.8600 vs champion 0.8800: change -0.0200",
    ),
    (
        "slice-missing-on-champion-is-skipped",
        ev(2, 0.900, hotels={"City Hotel": 0.90, "Airport Hotel": 0.50}),
        ev(1, 0.890, hotels={"City Hotel": 0.89}),
        {},
        "promote",
        "hotel=Airport Hotel: skipped, only the candidate has this slice",
    ),
    (
        "slice-missing-on-candidate-is-skipped",
        ev(2, 0.900, hotels={"City Hotel": 0.90}),
        ev(1, 0.890, hotels={"City Hotel": 0.89, "Airport Hotel": 0.99}),
        {},
        "promote",
        "hotel=Airport Hotel: skipped, only the champion has this slice",
    ),
    (
        "slice-nan-on-candidate-is-skipped",
        ev(2, 0.900, hotels={"City Hotel": 0.90, "Resort Hotel": NAN}),
        ev(1, 0.890),
        {},
        "promote",
        "hotel=Resort Hotel: skipped, roc_auc is nan for the candidate and 0.89 for the champion",
    ),
    (
        "slice-nan-on-champion-is-skipped",
        ev(2, 0.900, hotels={"City Hotel": 0.90, "Resort Hotel": 0.10}),
        ev(1, 0.890, hotels={"City Hotel": 0.89, "Resort Hotel": NAN}),
        {},
        "promote",
        "hotel=Resort Hotel: skipped, roc_auc is 0.1 for the candidate and nan for the champion",
    ),
    (
        "calibration-breach-while-better",
        ev(2, 0.900, brier=0.140),
        ev(1, 0.890, brier=0.130),
        {},
        "reject",
        "calibration brier worse by 0.0100 (max 0.0050): 0.1400 vs champion 0.1300",
    ),
    (
        "calibration-within-margin",
        ev(2, 0.900, brier=0.134),
        ev(1, 0.890, brier=0.130),
        {},
        "promote",
        "calibration brier 0.1340 vs champion 0.1300: change +0.0040 "
        "(may worsen by at most 0.0050): ok",
    ),
    (
        # 0.1 - 0.095 == 0.0050000000000000044 in floats: exactly at the limit still passes.
        "calibration-exactly-at-limit",
        ev(2, 0.900, brier=0.100),
        ev(1, 0.890, brier=0.095),
        {},
        "promote",
        "calibration brier 0.1000 vs champion 0.0950: change +0.0050",
    ),
    (
        "calibration-missing-on-champion",
        ev(2, 0.900, brier=0.50),
        ev(1, 0.890, brier=None),
        {},
        "promote",
        "calibration: skipped, brier is 0.5 for the candidate and missing for the champion",
    ),
    (
        "calibration-nan-on-candidate",
        ev(2, 0.900, brier=NAN),
        ev(1, 0.890),
        {},
        "promote",
        "calibration: skipped, brier is nan for the candidate and 0.13 for the champion",
    ),
    (
        "calibration-off",
        ev(2, 0.900, brier=0.90),
        ev(1, 0.890, brier=0.10),
        {"calibration_metric": None},
        "promote",
        "calibration: not checked",
    ),
    (
        "missing-champion",
        ev(1, 0.700),
        None,
        {},
        "promote",
        "no champion yet: the first model becomes champion (roc_auc 0.7000)",
    ),
    (
        "missing-champion-with-approval-required",
        ev(1, 0.700),
        None,
        {"require_approval": True},
        "promote",
        "(approval is not needed for the first model)",
    ),
    (
        "approval-required-on-a-passing-candidate",
        ev(2, 0.900),
        ev(1, 0.890),
        {"require_approval": True},
        "await_approval",
        "approval required: the candidate waits as challenger",
    ),
    (
        "approval-never-rescues-a-failing-candidate",
        ev(2, 0.850),
        ev(1, 0.890),
        {"require_approval": True},
        "reject",
        "-0.0400 (minimum +0.0020): worse",
    ),
    (
        "candidate-nan",
        ev(2, NAN),
        ev(1, 0.890),
        {},
        "reject",
        "candidate roc_auc is nan on this window (2016-07-01..2016-08-31 (1000 rows))",
    ),
    (
        "candidate-metric-missing",
        ev(2, None),
        ev(1, 0.890),
        {},
        "reject",
        "candidate roc_auc is missing on this window",
    ),
    (
        "candidate-nan-and-no-champion",
        ev(1, NAN),
        None,
        {},
        "reject",
        "a model without roc_auc cannot become champion",
    ),
    (
        "champion-nan-single-class-window",
        ev(2, 0.900),
        ev(1, NAN),
        {},
        "reject",
        "champion v1 roc_auc is nan on this window (2016-07-01..2016-08-31 (1000 rows)): "
        "the comparison is impossible on this window",
    ),
    (
        "champion-infinite",
        ev(2, 0.900),
        ev(1, math.inf),
        {},
        "reject",
        "the comparison is impossible on this window",
    ),
]


@pytest.mark.parametrize(
    "candidate, champion, overrides, outcome, words",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decision_table(
    candidate: Evaluation,
    champion: Evaluation | None,
    overrides: dict[str, Any],
    outcome: str,
    words: str,
) -> None:
    decision = decide(candidate, champion, **overrides)
    assert decision.outcome == outcome, decision.reasons
    assert decision.passed is (outcome != "reject")
    assert has(decision, words), decision.reasons
    assert bool(decision.failures) is (outcome == "reject")
    assert decision.candidate is candidate and decision.champion is champion
    payload = json.loads(json.dumps(decision.to_json(), allow_nan=False))
    assert payload["outcome"] == outcome and payload["reasons"] == list(decision.reasons)


# --- every check is listed, in order -----------------------------------------------------------


def test_a_passing_decision_lists_every_check_in_order() -> None:
    decision = decide(ev(2, 0.900), ev(1, 0.890))
    assert [r.split(" ")[0] for r in decision.reasons] == [
        "roc_auc",
        "hotel=City",
        "hotel=Resort",
        "calibration",
        "all",
    ]
    assert decision.reasons[-1] == "all checks passed: the candidate becomes champion"


def test_a_rejection_still_evaluates_and_lists_every_check() -> None:
    # Worse overall, a breached slice and worse calibration: all three fail, all three listed.
    candidate = ev(2, 0.850, brier=0.20, hotels={"City Hotel": 0.89, "Resort Hotel": 0.80})
    champion = ev(1, 0.890, brier=0.13, hotels={"City Hotel": 0.89, "Resort Hotel": 0.88})
    decision = decide(candidate, champion)
    assert decision.outcome == "reject"
    assert decision.failures == (
        "roc_auc worse by 0.0400",
        "hotel=Resort Hotel roc_auc worse by 0.0800 (max 0.0200)",
        "calibration brier worse by 0.0700 (max 0.0050)",
    )
    assert has(decision, "hotel=City Hotel roc_auc 0.8900 vs champion 0.8900: change +0.0000")
    assert len(decision.reasons) == 4  # primary, two slices, calibration; no "all passed"


def test_a_nan_champion_still_runs_the_guardrails() -> None:
    champion = ev(1, NAN, brier=0.10, hotels={"City Hotel": 0.95, "Resort Hotel": 0.90})
    decision = decide(ev(2, 0.900, brier=0.20), champion)
    assert decision.outcome == "reject"
    assert decision.failures[0] == "champion v1 roc_auc is not available on this window"
    assert "calibration brier worse by 0.1000 (max 0.0050)" in decision.failures
    assert "roc_auc" not in decision.deltas  # no primary comparison was possible


def test_the_first_model_skips_the_comparisons_in_words() -> None:
    decision = decide(ev(1, 0.70), None, require_approval=True)
    assert decision.outcome == "promote" and decision.deltas == {}
    assert decision.reasons == (
        "no champion yet: the first model becomes champion (roc_auc 0.7000) (approval is not "
        "needed for the first model); the improvement, slice and calibration checks need a "
        "champion and were skipped",
    )


def test_every_slice_column_is_checked() -> None:
    candidate = Evaluation(
        2,
        {"roc_auc": 0.90},
        {"hotel": {"City Hotel": {"roc_auc": 0.90}}, "market": {"Online TA": {"roc_auc": 0.70}}},
    )
    champion = Evaluation(
        1,
        {"roc_auc": 0.89},
        {"hotel": {"City Hotel": {"roc_auc": 0.89}}, "market": {"Online TA": {"roc_auc": 0.80}}},
    )
    decision = decide(candidate, champion, calibration_metric=None)
    assert decision.failures == ("market=Online TA roc_auc worse by 0.1000 (max 0.0200)",)


def test_a_slice_column_only_one_side_has_is_skipped() -> None:
    candidate = Evaluation(2, {"roc_auc": 0.90}, {"country": {"PRT": {"roc_auc": 0.1}}})
    decision = decide(candidate, Evaluation(1, {"roc_auc": 0.89}))
    assert decision.outcome == "promote"
    assert has(decision, "country=PRT: skipped, only the candidate has this slice")


def test_a_slice_without_the_primary_metric_is_skipped() -> None:
    candidate = Evaluation(2, {"roc_auc": 0.90}, {"hotel": {"City Hotel": {"rows": 1.0}}})
    champion = Evaluation(1, {"roc_auc": 0.89}, {"hotel": {"City Hotel": {"roc_auc": 0.99}}})
    decision = decide(candidate, champion)
    assert decision.outcome == "promote"
    assert has(decision, "hotel=City Hotel: skipped, roc_auc is missing for the candidate")


# --- lower-is-better primary metrics -----------------------------------------------------------


@pytest.mark.parametrize(
    "metric, cand, champ, minimum, outcome, words",
    [
        (
            "log_loss",
            0.38,
            0.40,
            0.01,
            "promote",
            "log_loss (lower is better) 0.3800 vs champion "
            "0.4000: +0.0200 (minimum +0.0100): better",
        ),
        ("log_loss", 0.42, 0.40, 0.0, "reject", "-0.0200 (minimum +0.0000): worse"),
        ("log_loss", 0.395, 0.40, 0.01, "reject", "+0.0050 (minimum +0.0100): equal within"),
        ("log_loss", 0.100, 0.102, 0.002, "promote", "+0.0020 (minimum +0.0020): better"),
        (
            "rmse",
            50.0,
            55.0,
            1.0,
            "promote",
            "rmse (lower is better) 50.0000 vs champion 55.0000: +5.0000 (minimum +1.0000): better",
        ),
        ("rmse", 56.0, 55.0, 0.0, "reject", "-1.0000 (minimum +0.0000): worse"),
        ("mae", 30.0, 30.5, 1.0, "reject", "+0.5000 (minimum +1.0000): equal within"),
        ("r2", 0.55, 0.50, 0.01, "promote", "r2 0.5500 vs champion 0.5000: +0.0500"),
        ("r2", 0.40, 0.50, 0.0, "reject", "-0.1000 (minimum +0.0000): worse"),
    ],
)
def test_primary_metric_direction(
    metric: str, cand: float, champ: float, minimum: float, outcome: str, words: str
) -> None:
    policy = GateConfig(primary_metric=metric, min_improvement=minimum, calibration_metric=None)
    decision = decide_promotion(
        Evaluation(2, {metric: cand}), Evaluation(1, {metric: champ}), policy
    )
    assert decision.outcome == outcome, decision.reasons
    assert has(decision, words), decision.reasons
    assert decision.deltas[metric] == pytest.approx(cand - champ)  # raw, not direction-adjusted


def test_regression_slice_guardrail_uses_the_metric_direction() -> None:
    # rmse is lower-is-better: a slice whose rmse rises by 3 breaches a max drop of 2.
    policy = GateConfig(primary_metric="rmse", min_improvement=0.5, max_slice_drop=2.0)
    candidate = Evaluation(
        2, {"rmse": 50.0}, {"hotel": {"City Hotel": {"rmse": 40.0}, "Resort Hotel": {"rmse": 63.0}}}
    )
    champion = Evaluation(
        1, {"rmse": 55.0}, {"hotel": {"City Hotel": {"rmse": 50.0}, "Resort Hotel": {"rmse": 60.0}}}
    )
    decision = decide_promotion(candidate, champion, policy)
    assert decision.outcome == "reject"
    assert decision.failures == ("hotel=Resort Hotel rmse worse by 3.0000 (max 2.0000)",)
    assert has(decision, "hotel=City Hotel rmse 40.0000 vs champion 50.0000: change -10.0000")
    assert has(decision, "calibration: skipped, brier is missing for the candidate and missing")


def test_lower_is_better_calibration_metric() -> None:
    policy = POLICY.model_copy(update={"calibration_metric": "log_loss"})
    worse = (
        Evaluation(2, {"roc_auc": 0.90, "log_loss": 0.41}),
        Evaluation(1, {"roc_auc": 0.89, "log_loss": 0.40}),
    )
    better = (
        Evaluation(2, {"roc_auc": 0.90, "log_loss": 0.30}),
        Evaluation(1, {"roc_auc": 0.89, "log_loss": 0.40}),
    )
    assert decide_promotion(*worse, policy).failures == (
        "calibration log_loss worse by 0.0100 (max 0.0050)",
    )
    assert decide_promotion(*better, policy).outcome == "promote"


# --- metric_improvement and unknown metrics ----------------------------------------------------


@pytest.mark.parametrize(
    "metric, candidate, champion, expected",
    [
        ("roc_auc", 0.90, 0.88, 0.02),
        ("roc_auc", 0.88, 0.90, -0.02),
        ("pr_auc", 0.60, 0.50, 0.10),
        ("accuracy", 0.80, 0.85, -0.05),
        ("precision", 0.70, 0.70, 0.0),
        ("recall", 0.70, 0.60, 0.10),
        ("r2", 0.30, 0.20, 0.10),
        ("log_loss", 0.38, 0.40, 0.02),
        ("log_loss", 0.42, 0.40, -0.02),
        ("brier", 0.12, 0.13, 0.01),
        ("rmse", 50.0, 55.0, 5.0),
        ("rmse", 55.0, 50.0, -5.0),
        ("mae", 10.0, 12.0, 2.0),
    ],
)
def test_metric_improvement(
    metric: str, candidate: float, champion: float, expected: float
) -> None:
    assert metric_improvement(metric, candidate, champion) == pytest.approx(expected)


@pytest.mark.parametrize("metric", ["f1", "ROC_AUC", "", "rows"])
def test_unknown_metric_raises(metric: str) -> None:
    with pytest.raises(ValueError, match=f"unknown metric '{metric}'"):
        metric_improvement(metric, 0.5, 0.4)


@pytest.mark.parametrize("field", ["primary_metric", "calibration_metric"])
def test_gate_config_refuses_unknown_metrics(field: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="unknown metric 'f1'"):
        GateConfig(**{field: "f1"})


def test_decide_promotion_refuses_an_unvalidated_unknown_metric() -> None:
    policy = GateConfig.model_construct(**{**POLICY.model_dump(), "primary_metric": "f1"})
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        decide_promotion(Evaluation(2, {"f1": 0.5}), None, policy)


# --- deltas, summary, to_json ------------------------------------------------------------------


def test_deltas_are_raw_differences_for_primary_slices_and_calibration() -> None:
    candidate = ev(2, 0.910, brier=0.120, hotels={"City Hotel": 0.93, "Resort Hotel": 0.87})
    champion = ev(1, 0.890, brier=0.130, hotels={"City Hotel": 0.89, "Resort Hotel": 0.88})
    deltas = decide(candidate, champion).deltas
    assert deltas.keys() == {
        "roc_auc",
        "slice:hotel=City Hotel:roc_auc",
        "slice:hotel=Resort Hotel:roc_auc",
        "brier",
    }
    assert deltas["roc_auc"] == pytest.approx(0.02)
    assert deltas["slice:hotel=City Hotel:roc_auc"] == pytest.approx(0.04)
    assert deltas["slice:hotel=Resort Hotel:roc_auc"] == pytest.approx(-0.01)
    assert deltas["brier"] == pytest.approx(-0.01)  # lower brier: a negative raw delta
    assert next(iter(deltas)) == "roc_auc"  # the primary metric first


@pytest.mark.parametrize(
    "candidate, champion, overrides, summary",
    [
        (ev(2, 0.9113), ev(1, 0.900), {}, "promote v2 over champion v1: roc_auc +0.0113"),
        (
            ev(3, 0.9113),
            ev(2, 0.900),
            {"require_approval": True},
            "await approval for v3 over champion v2: roc_auc +0.0113 (approval required)",
        ),
        (
            ev(3, 0.910, hotels={"City Hotel": 0.93, "Resort Hotel": 0.85}),
            ev(2, 0.890, hotels={"City Hotel": 0.89, "Resort Hotel": 0.881}),
            {},
            "reject v3: hotel=Resort Hotel roc_auc worse by 0.0310 (max 0.0200)",
        ),
        (
            ev(3, 0.891),
            ev(2, 0.890),
            {},
            "reject v3: roc_auc improvement +0.0010 below the minimum +0.0020",
        ),
        (
            ev(3, 0.850, hotels=SAME),
            ev(2, 0.890, hotels=SAME),
            {},
            "reject v3: roc_auc worse by 0.0400",
        ),
        (ev(1, 0.800), None, {}, "promote v1: no champion yet, the first model becomes champion"),
        (ev(None, 0.950), ev(4, 0.900), {}, "promote candidate over champion v4: roc_auc +0.0500"),
        (ev(0, NAN), None, {}, "reject v0: candidate roc_auc is not available on this window"),
        (
            ev(2, 0.900, brier=0.2),
            ev(1, 0.890),
            {},
            "reject v2: calibration brier worse by 0.0700 (max 0.0050)",
        ),
    ],
)
def test_summary(
    candidate: Evaluation, champion: Evaluation | None, overrides: dict[str, Any], summary: str
) -> None:
    assert decide(candidate, champion, **overrides).summary() == summary


def test_summary_lists_every_failure_on_one_line() -> None:
    decision = decide(ev(2, 0.850, brier=0.2, hotels=SAME), ev(1, 0.890, hotels=SAME))
    assert decision.summary() == (
        "reject v2: roc_auc worse by 0.0400; calibration brier worse by 0.0700 (max 0.0050)"
    )
    assert "\n" not in decision.summary()


def test_to_json_is_strict_json_with_nan_as_null() -> None:
    # Metrics straight from numpy (float32 is not a float subclass) must serialize too.
    metrics: dict[str, Any] = {
        "roc_auc": 0.9,
        "pr_auc": NAN,
        "brier": np.float64(0.12),
        "rows": np.float32(10.0),
    }
    candidate = Evaluation(
        2,
        metrics,
        {"hotel": {"Resort Hotel": {"roc_auc": NAN}, "City Hotel": {"roc_auc": math.inf}}},
        "last 28 days",
    )
    champion = Evaluation(1, {"roc_auc": 0.89, "brier": 0.13, "pr_auc": NAN})
    decision = decide(candidate, champion)
    text = json.dumps(decision.to_json(), allow_nan=False)
    payload = json.loads(text)
    assert payload["outcome"] == "promote" and payload["passed"] is True
    assert payload["summary"] == decision.summary()
    assert payload["candidate"] == {
        "version": 2,
        "window": "last 28 days",
        "metrics": {"roc_auc": 0.9, "pr_auc": None, "brier": 0.12, "rows": 10.0},
        "slices": {"hotel": {"Resort Hotel": {"roc_auc": None}, "City Hotel": {"roc_auc": None}}},
    }
    assert payload["champion"]["version"] == 1 and payload["champion"]["metrics"]["pr_auc"] is None
    assert payload["deltas"]["roc_auc"] == pytest.approx(0.01)
    assert payload["failures"] == []


def test_to_json_without_champion() -> None:
    payload = json.loads(json.dumps(decide(ev(1, NAN), None).to_json(), allow_nan=False))
    assert payload["champion"] is None
    assert payload["outcome"] == "reject" and payload["passed"] is False
    assert payload["candidate"]["metrics"]["roc_auc"] is None
    assert payload["failures"] == ["candidate roc_auc is not available on this window"]
    assert any("no champion" in r for r in payload["reasons"])


def test_numpy_metric_values_are_compared() -> None:
    cand_metrics: dict[str, Any] = {"roc_auc": np.float32(0.95), "brier": np.float64(0.10)}
    champ_metrics: dict[str, Any] = {"roc_auc": np.float64(0.90), "brier": np.float32(0.11)}
    candidate, champion = Evaluation(2, cand_metrics), Evaluation(1, champ_metrics)
    decision = decide(candidate, champion)
    assert decision.outcome == "promote"
    assert decision.deltas["roc_auc"] == pytest.approx(0.05)


def test_evaluation_and_decision_are_frozen() -> None:
    decision = decide(ev(2, 0.9), ev(1, 0.89))
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.outcome = "reject"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.candidate.version = 7  # type: ignore[misc]
