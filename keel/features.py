"""The feature builder: fitted on training data only, saved next to the model.

A model is itself plus its transformations. The fitted :class:`FeatureSpec` holds everything
needed to turn raw records into the model's matrix the same way at training and at prediction
time: the column order, the derived-feature expressions and the category list of every
categorical column. Unknown categories and missing values at prediction time become missing
values, which XGBoost routes down its learned default branch, never a crash.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from keel.config import FeaturizeConfig
from keel.distinct import codes_of
from keel.expressions import evaluate, referenced_columns
from keel.history import history_features
from keel.table import canonical_text

__all__ = [
    "FLOAT32_MAX",
    "SPEC_VERSION",
    "FeatureError",
    "FeatureSpec",
    "build_features",
    "count_unseen",
    "derived_feature",
    "encode_categories",
    "fit_feature_spec",
    "numeric_feature",
]

SPEC_VERSION = 1


class FeatureError(ValueError):
    """Records cannot be turned into features (for example a required column is missing)."""


@dataclass(frozen=True)
class FeatureSpec:
    """The fitted transformation from raw records to the model's matrix."""

    numeric: list[str]
    categories: dict[str, list[str]]
    derived: dict[str, str]
    order: list[str]
    version: int = SPEC_VERSION
    history: dict[str, Any] = field(default_factory=dict)  # keys, window_days, prior

    def to_json(self) -> str:
        """Serialise to JSON (no pickle anywhere)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        """Load a spec written by :meth:`to_json`."""
        payload: dict[str, Any] = json.loads(text)
        if payload.get("version") != SPEC_VERSION:
            raise FeatureError(
                f"feature spec version {payload.get('version')} is not supported "
                f"(this Keel reads version {SPEC_VERSION})"
            )
        return cls(**payload)

    @property
    def required_columns(self) -> set[str]:
        """Columns a record must carry to be featurized (history features included)."""
        cols = set(self.numeric) | set(self.categories)
        for expr in self.derived.values():
            cols |= referenced_columns(expr)
        return cols

    @property
    def history_columns(self) -> list[str]:
        """The outcome-history features, computed from known outcomes (keel.history)."""
        return history_features(list(self.history.get("keys", [])))

    @property
    def input_columns(self) -> set[str]:
        """Raw columns a caller supplies: the history features are computed, from their keys."""
        return (self.required_columns - set(self.history_columns)) | set(
            self.history.get("keys", [])
        )


def _as_text(values: pd.Series) -> pd.Series:
    """Categories are compared as text, so 9, 9.0 and '9' are one category, in any batch."""
    return canonical_text(values)


def fit_feature_spec(frame: pd.DataFrame, config: FeaturizeConfig) -> FeatureSpec:
    """Learn the category lists from training rows only.

    Args:
        frame: Training records (raw columns).
        config: The `featurize` section.

    Returns:
        The fitted spec. Categories seen fewer than `min_category_count` times are left out
        and so treated like unseen ones.
    """
    _require(frame, set(config.numeric) | set(config.categorical) | set(config.history_names))
    categories: dict[str, list[str]] = {}
    for col in config.categorical:
        counts = _as_text(frame[col]).value_counts(dropna=True)
        kept = counts[counts >= config.min_category_count].index
        categories[col] = sorted(str(v) for v in kept)
    history = config.history
    return FeatureSpec(
        numeric=[*config.numeric, *config.history_names],
        categories=categories,
        derived=dict(config.derived),
        order=list(config.feature_names),
        history=(
            {
                "keys": list(history.columns),
                "window_days": history.window_days,
                "prior": history.prior,
            }
            if history.columns
            else {}
        ),
    )


def _require(frame: pd.DataFrame, columns: set[str]) -> None:
    missing = sorted(columns - set(frame.columns))
    if missing:
        raise FeatureError(f"records lack required feature columns: {missing}")


def build_features(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Apply a fitted spec to raw records.

    Args:
        frame: Raw records (any extra columns are ignored).
        spec: The fitted spec.

    Returns:
        The model matrix: numeric columns as float64 (inf, and numbers beyond float32's range,
        become missing), categorical columns as pandas categoricals with the spec's categories
        (unseen becomes missing), in the spec's column order, with the input's index.
    """
    _require(frame, spec.required_columns)
    out = pd.DataFrame(index=frame.index)
    for col in spec.numeric:
        out[col] = numeric_feature(frame[col])
    for col, cats in spec.categories.items():
        out[col] = encode_categories(frame[col], cats)
    for name, expr in spec.derived.items():
        out[name] = derived_feature(frame, expr)
    return out[spec.order]


FLOAT32_MAX = float(np.finfo(np.float32).max)
"""XGBoost computes in float32: a number beyond this is infinite to the model."""


def numeric_feature(values: pd.Series) -> pd.Series:
    """A numeric input as float64: text that is not a number, inf, and numbers too large for
    XGBoost's float32 (infinite there) become missing."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    return numbers.where(numbers.abs() <= FLOAT32_MAX)


def derived_feature(frame: pd.DataFrame, expr: str) -> pd.Series:
    """A derived feature's values (float64; what cannot be computed becomes missing)."""
    try:
        raw = evaluate(expr, frame)
    except TypeError:
        # A numeric input read as text (one bad value in a CSV): compute on numbers.
        numbers = frame.assign(
            **{c: pd.to_numeric(frame[c], errors="coerce") for c in referenced_columns(expr)}
        )
        raw = evaluate(expr, numbers)
    return numeric_feature(raw)


def encode_categories(values: pd.Series, categories: list[str]) -> pd.Categorical:
    """Encode values with a fixed category list; unseen values become missing."""
    positions = {name: i for i, name in enumerate(categories)}
    codes = codes_of(_as_text(values), positions, absent=-1)
    return pd.Categorical.from_codes(codes, categories=categories)


def count_unseen(frame: pd.DataFrame, spec: FeatureSpec) -> dict[str, int]:
    """Count, per categorical column, the present values the spec has not seen in training."""
    counts = {}
    for col, cats in spec.categories.items():
        text = _as_text(frame[col])
        counts[col] = int((text.notna() & ~text.isin(cats)).sum())
    return counts
