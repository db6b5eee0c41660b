"""Split policies: time-based (leakage-free) or seeded random for data without time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from keel.config import SplitConfig
from keel.table import LABEL_TIME, ORDER_TIME

__all__ = ["Split", "SplitError", "split_frame"]


class SplitError(ValueError):
    """The split policy leaves a part empty or needs columns the table lacks."""


@dataclass(frozen=True)
class Split:
    """Boolean masks over one frame.

    `train` is everything the final model learns from; `fit` and `valid` carve an early-stopping
    slice out of it: `fit` is what was known when `valid` began, so the validation score mimics
    the holdout's situation. `holdout` never overlaps `train`.
    """

    train: pd.Series
    fit: pd.Series
    valid: pd.Series
    holdout: pd.Series

    def sizes(self) -> dict[str, int]:
        """Row counts per part."""
        return {
            name: int(getattr(self, name).sum()) for name in ("train", "fit", "valid", "holdout")
        }


def _time_split(frame: pd.DataFrame, policy: SplitConfig) -> Split:
    if ORDER_TIME not in frame.columns or LABEL_TIME not in frame.columns:
        raise SplitError("a time split needs the order and label time columns (see data section)")
    assert policy.cutoff and policy.holdout_end and policy.validation_start
    order, known = frame[ORDER_TIME], frame[LABEL_TIME]
    cutoff = pd.Timestamp(policy.cutoff)
    vstart = pd.Timestamp(policy.validation_start)
    # A model trained as of T learns only from records whose label was known at T.
    train = (order < cutoff) & (known <= cutoff)
    fit = (order < vstart) & (known <= vstart)
    valid = (order >= vstart) & (order < cutoff)
    end = pd.Timestamp(policy.holdout_end) + pd.Timedelta(days=1)
    holdout = (order >= cutoff) & (order < end)
    if policy.holdout_labels_known:
        holdout &= known < end
    if policy.no_holdout:
        holdout = pd.Series(False, index=frame.index)
    return Split(train=train, fit=fit, valid=valid, holdout=holdout)


def _random_split(frame: pd.DataFrame, policy: SplitConfig) -> Split:
    rng = np.random.default_rng(policy.seed)
    u = pd.Series(rng.random(len(frame)), index=frame.index)
    holdout = u < policy.holdout_fraction
    valid = (~holdout) & (u < policy.holdout_fraction + policy.validation_fraction)
    train = ~holdout
    return Split(train=train, fit=train & ~valid, valid=valid, holdout=holdout)


def split_frame(frame: pd.DataFrame, policy: SplitConfig) -> Split:
    """Split a frame by the configured policy.

    Args:
        frame: Records with the reserved time columns (for a time split).
        policy: The split policy.

    Returns:
        The masks.

    Raises:
        SplitError: A part would be empty; the message names it and the dates.
    """
    split = _time_split(frame, policy) if policy.method == "time" else _random_split(frame, policy)
    empty = [
        name
        for name, size in split.sizes().items()
        if size == 0 and not (name == "holdout" and policy.no_holdout)
    ]
    if empty:
        raise SplitError(
            f"split leaves {empty} empty (policy {policy.model_dump(mode='json')}); "
            "check the split dates against the data's time range"
        )
    return split
