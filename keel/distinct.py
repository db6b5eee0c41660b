"""Column work done once per distinct value: most columns Keel reads as text repeat a few values
(a country, an agent, a month name) over many rows, and a Python call per row costs seconds on
a million rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["codes_of", "distinct_codes", "per_distinct"]

_MIN_ROWS = 1_000


def per_distinct(values: pd.Series, fn: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """`fn(values)` for an elementwise `fn`, computed once per distinct value when values repeat.

    Not for object columns: factorizing merges values that compare equal but `fn` may tell
    apart (True and 1). Missing values stay missing.
    """
    found = distinct_codes(values)
    if found is None:
        return fn(values)
    codes, uniques = found
    taken = fn(pd.Series(uniques)).array.take(codes, allow_fill=True)
    return pd.Series(taken, index=values.index, name=values.name)


def distinct_codes(values: pd.Series) -> tuple[np.ndarray, Any] | None:
    """`pd.factorize(values)` (codes, -1 for missing; the distinct values) where working once
    per distinct value pays: enough rows, values that repeat, not an object column (see
    `per_distinct`); otherwise None."""
    if len(values) >= _MIN_ROWS and values.dtype != object:
        codes, uniques = pd.factorize(values)
        if len(uniques) * 4 <= len(values):
            return codes, uniques
    return None


def codes_of(texts: pd.Series, positions: dict[str, int], absent: int) -> np.ndarray:
    """Each text's position in `positions` (`absent` for an unknown or missing text), looking
    each distinct text up once."""
    found, uniques = pd.factorize(texts)  # missing: -1, which reads the trailing `absent`
    lookup = np.array([positions.get(str(u), absent) for u in uniques] + [absent], dtype="int64")
    codes: np.ndarray = lookup[found]
    return codes
