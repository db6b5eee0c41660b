"""The promotion gate: a pure function from two evaluations and a policy to a decision.

The candidate and the current champion are scored on the same recent labelled window; the gate
compares them under the `gate` section of `params.yaml` (`GateConfig`) and says whether the
candidate is promoted, waits for a person's approval, or is rejected. Every check is listed in
words, the passing and skipped ones too, so the decision explains itself in the audit trail.
No I/O and no Prefect here: `tasks/registry.py` does the scoring and applies the decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, SupportsFloat

from keel.config import HIGHER_IS_BETTER, LOWER_IS_BETTER, GateConfig

__all__ = ["Decision", "Evaluation", "Outcome", "decide_promotion", "metric_improvement"]

Outcome = Literal["promote", "await_approval", "reject"]

_TOLERANCE = 1e-12  # float noise: a difference exactly at a limit counts as at the limit


@dataclass(frozen=True)
class Evaluation:
    """One model scored on the gate's window.

    Attributes:
        version: The registry version, or None for an unregistered candidate.
        metrics: Flat metrics, e.g. `{"roc_auc": 0.89, "brier": 0.13, ...}`.
        slices: Metrics per slice: `{slice_column: {slice_value: {metric: value}}}`.
        window: What the window was, e.g. `"2016-07-01..2016-08-31 (9635 rows)"`.
    """

    version: int | None
    metrics: Mapping[str, float]
    slices: Mapping[str, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)
    window: str = ""

    @property
    def label(self) -> str:
        """`v3`, or `candidate` when unregistered."""
        return "candidate" if self.version is None else f"v{self.version}"


@dataclass(frozen=True)
class Decision:
    """The gate's verdict, with every check in words.

    Attributes:
        outcome: `promote`, `await_approval` (passed; a person must approve) or `reject`.
        reasons: Every check in order, passing and skipped ones too.
        candidate: The candidate's evaluation.
        champion: The champion's evaluation on the same window, or None when there is none.
        deltas: Candidate minus champion (raw difference) for the primary metric, the
            calibration metric and each compared slice (`slice:<col>=<value>:<metric>`).
        failures: One short line per failed check, in order (empty unless rejected).
    """

    outcome: Outcome
    reasons: tuple[str, ...]
    candidate: Evaluation
    champion: Evaluation | None
    deltas: Mapping[str, float]
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """Whether the candidate passed the gate (promoted, or waiting for approval)."""
        return self.outcome != "reject"

    def summary(self) -> str:
        """One line: the outcome and what decided it.

        Returns:
            E.g. `promote v3 over champion v2: roc_auc +0.0113` or
            `reject v3: hotel=Resort Hotel roc_auc worse by 0.0310 (max 0.0200)`.
        """
        cand = self.candidate.label
        if self.outcome == "reject":
            return f"reject {cand}: " + ("; ".join(self.failures) or "failed the gate")
        verb = "promote" if self.outcome == "promote" else "await approval for"
        if self.champion is None:
            return f"{verb} {cand}: no champion yet, the first model becomes champion"
        primary = next(iter(self.deltas.items()), None)
        gain = f": {primary[0]} {primary[1]:+.4f}" if primary else ""
        tail = " (approval required)" if self.outcome == "await_approval" else ""
        return f"{verb} {cand} over champion {self.champion.label}{gain}{tail}"

    def to_json(self) -> dict[str, Any]:
        """The decision as a JSON-safe dict (NaN and infinities become null).

        Returns:
            outcome, passed, summary, reasons, failures, candidate, champion and deltas.
        """
        payload: dict[str, Any] = {
            "outcome": self.outcome,
            "passed": self.passed,
            "summary": self.summary(),
            "reasons": list(self.reasons),
            "failures": list(self.failures),
            "candidate": _evaluation_json(self.candidate),
            "champion": None if self.champion is None else _evaluation_json(self.champion),
            "deltas": _json_safe(self.deltas),
        }
        return payload


def metric_improvement(metric: str, candidate: float, champion: float) -> float:
    """How much better the candidate is, whichever way the metric points.

    Args:
        metric: A metric name from `HIGHER_IS_BETTER` or `LOWER_IS_BETTER`.
        candidate: The candidate's value.
        champion: The champion's value.

    Returns:
        Positive when the candidate is better, negative when it is worse.

    Raises:
        ValueError: The metric's direction is unknown.
    """
    if metric in HIGHER_IS_BETTER:
        return candidate - champion
    if metric in LOWER_IS_BETTER:
        return champion - candidate
    known = sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER)
    raise ValueError(f"unknown metric '{metric}'; known: {known}")


def decide_promotion(
    candidate: Evaluation, champion: Evaluation | None, policy: GateConfig
) -> Decision:
    """Decide whether the candidate replaces the champion.

    Both evaluations must come from the same window. The rules, all evaluated so that the
    reasons list every check: with no champion the candidate is promoted (the first model
    becomes champion, even when approval is required) unless its primary metric is missing;
    otherwise the primary metric must improve by at least `min_improvement`, no slice present
    in both evaluations may worsen by more than `max_slice_drop`, and the calibration metric
    may not worsen by more than `max_calibration_worsening`. A candidate that passes waits for
    approval when `require_approval` is set.

    Args:
        candidate: The new model's evaluation.
        champion: The current champion's evaluation on the same window, or None.
        policy: The `gate` section of `params.yaml`.

    Returns:
        The decision: promote, await_approval or reject, with its reasons and deltas.

    Raises:
        ValueError: The policy names a metric whose direction is unknown.
    """
    metric = policy.primary_metric
    metric_improvement(metric, 0.0, 0.0)  # an unknown metric fails before anything else
    checks = _Checks()
    cand_value = _number(candidate.metrics.get(metric))
    if cand_value is None:
        checks.fail(
            f"candidate {metric} is not available on this window",
            f"candidate {metric} is {_show(candidate.metrics.get(metric))} on this window "
            f"({_window(candidate)}): it cannot be judged",
        )
    if champion is None:
        _first_model(checks, metric, cand_value, policy)
        outcome: Outcome = "reject" if checks.failures else "promote"
        return Decision(outcome, tuple(checks.reasons), candidate, None, {}, checks.failed())

    champ_value = _number(champion.metrics.get(metric))
    if champ_value is None:
        checks.fail(
            f"champion {champion.label} {metric} is not available on this window",
            f"champion {champion.label} {metric} is {_show(champion.metrics.get(metric))} on "
            f"this window ({_window(champion)}): the comparison is impossible on this window",
        )
    if cand_value is not None and champ_value is not None:
        _primary_check(checks, metric, cand_value, champ_value, policy.min_improvement)
    _slice_checks(checks, candidate, champion, metric, policy.max_slice_drop)
    _calibration_check(checks, candidate, champion, policy)

    if checks.failures:
        outcome = "reject"
    elif policy.require_approval:
        outcome = "await_approval"
        checks.note("all checks passed; approval required: the candidate waits as challenger")
    else:
        outcome = "promote"
        checks.note("all checks passed: the candidate becomes champion")
    return Decision(
        outcome, tuple(checks.reasons), candidate, champion, dict(checks.deltas), checks.failed()
    )


class _Checks:
    """Collects reasons in order, the failed checks' headlines, and the deltas."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.failures: list[str] = []
        self.deltas: dict[str, float] = {}

    def note(self, reason: str) -> None:
        self.reasons.append(reason)

    def fail(self, headline: str, reason: str) -> None:
        self.failures.append(headline)
        self.reasons.append(reason)

    def failed(self) -> tuple[str, ...]:
        return tuple(self.failures)


def _first_model(
    checks: _Checks, metric: str, cand_value: float | None, policy: GateConfig
) -> None:
    skipped = "the improvement, slice and calibration checks need a champion and were skipped"
    if cand_value is None:
        checks.note(f"no champion yet, but a model without {metric} cannot become champion")
        return
    approval = " (approval is not needed for the first model)" if policy.require_approval else ""
    checks.note(
        f"no champion yet: the first model becomes champion ({metric} {cand_value:.4f})"
        f"{approval}; {skipped}"
    )


def _primary_check(checks: _Checks, metric: str, cand: float, champ: float, minimum: float) -> None:
    gain = metric_improvement(metric, cand, champ)
    checks.deltas[metric] = cand - champ
    d = max(_decimals(cand, champ), _decimals(gain, minimum))
    direction = "" if metric in HIGHER_IS_BETTER else " (lower is better)"
    head = (
        f"{metric}{direction} {cand:.{d}f} vs champion {champ:.{d}f}: "
        f"{gain:+.{d}f} (minimum {minimum:+.{d}f})"
    )
    if gain + _TOLERANCE >= minimum:
        checks.note(f"{head}: {'better' if gain > _TOLERANCE else 'no worse, minimum met'}")
    elif gain < -_TOLERANCE:
        checks.fail(f"{metric} worse by {-gain:.{d}f}", f"{head}: worse")
    else:
        checks.fail(
            f"{metric} improvement {gain:+.{d}f} below the minimum {minimum:+.{d}f}",
            f"{head}: equal within the margin, not better by the minimum",
        )


def _slice_checks(
    checks: _Checks, candidate: Evaluation, champion: Evaluation, metric: str, limit: float
) -> None:
    columns = list(dict.fromkeys([*candidate.slices, *champion.slices]))
    for column in columns:
        cand_col = candidate.slices.get(column, {})
        champ_col = champion.slices.get(column, {})
        for value in dict.fromkeys([*cand_col, *champ_col]):
            name = f"{column}={value}"
            if value not in champ_col or value not in cand_col:
                side = "candidate" if value in cand_col else "champion"
                checks.note(f"{name}: skipped, only the {side} has this slice on the window")
                continue
            cand_raw, champ_raw = cand_col[value].get(metric), champ_col[value].get(metric)
            cand_v, champ_v = _number(cand_raw), _number(champ_raw)
            if cand_v is None or champ_v is None:
                checks.note(
                    f"{name}: skipped, {metric} is {_show(cand_raw)} for the candidate and "
                    f"{_show(champ_raw)} for the champion"
                )
                continue
            checks.deltas[f"slice:{name}:{metric}"] = cand_v - champ_v
            worse = -metric_improvement(metric, cand_v, champ_v)
            d = max(_decimals(cand_v, champ_v), _decimals(worse, limit))
            numbers = f"{cand_v:.{d}f} vs champion {champ_v:.{d}f}"
            if worse > limit + _TOLERANCE:
                headline = f"{name} {metric} worse by {worse:.{d}f} (max {limit:.{d}f})"
                checks.fail(headline, f"{headline}: {numbers}")
            else:
                checks.note(
                    f"{name} {metric} {numbers}: change {cand_v - champ_v:+.{d}f} "
                    f"(may worsen by at most {limit:.{d}f}): ok"
                )


def _calibration_check(
    checks: _Checks, candidate: Evaluation, champion: Evaluation, policy: GateConfig
) -> None:
    calib = policy.calibration_metric
    if calib is None:
        checks.note("calibration: not checked (no calibration_metric in the policy)")
        return
    cand_raw, champ_raw = candidate.metrics.get(calib), champion.metrics.get(calib)
    cand_c, champ_c = _number(cand_raw), _number(champ_raw)
    if cand_c is None or champ_c is None:
        checks.note(
            f"calibration: skipped, {calib} is {_show(cand_raw)} for the candidate and "
            f"{_show(champ_raw)} for the champion"
        )
        return
    checks.deltas[calib] = cand_c - champ_c
    limit = policy.max_calibration_worsening
    worse = -metric_improvement(calib, cand_c, champ_c)
    d = max(_decimals(cand_c, champ_c), _decimals(worse, limit))
    numbers = f"{cand_c:.{d}f} vs champion {champ_c:.{d}f}"
    if worse > limit + _TOLERANCE:
        headline = f"calibration {calib} worse by {worse:.{d}f} (max {limit:.{d}f})"
        checks.fail(headline, f"{headline}: {numbers}")
    else:
        checks.note(
            f"calibration {calib} {numbers}: change {cand_c - champ_c:+.{d}f} "
            f"(may worsen by at most {limit:.{d}f}): ok"
        )


def _number(value: object) -> float | None:
    """The value as a finite float, or None when it is missing, NaN, infinite or not a number."""
    if isinstance(value, bool) or not isinstance(value, SupportsFloat):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _show(value: object) -> str:
    return "missing" if value is None else repr(value)


def _window(evaluation: Evaluation) -> str:
    return evaluation.window or "window not described"


def _decimals(a: float, b: float) -> int:
    """Decimals (4 to 8) needed to show two different numbers as different."""
    for decimals in range(4, 9):
        if abs(a - b) <= _TOLERANCE or f"{a:.{decimals}f}" != f"{b:.{decimals}f}":
            return decimals
    return 8


def _evaluation_json(evaluation: Evaluation) -> dict[str, Any]:
    return {
        "version": evaluation.version,
        "window": evaluation.window,
        "metrics": _json_safe(evaluation.metrics),
        "slices": _json_safe(evaluation.slices),
    }


def _json_safe(value: object) -> Any:
    """Plain JSON types: mappings with string keys, lists, finite floats; NaN/inf become None."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, SupportsFloat):
        return _number(value)  # a finite float, or None for NaN and infinities
    return str(value)
