"""Outcome history per key: what was already known about records like this one.

For each record and each configured key column (an agent, a country, a customer segment), two
features: how many records with the same key value had a known outcome in the trailing window
(`hist_n_<key>`), and their outcome rate, smoothed toward the overall rate of the window
(`hist_rate_<key>`). Only outcomes known *before* the moment the record is scored count, so
the features never carry a record's own label or anything from its future:

- For training and for judging records whose outcome is known (evaluation, the gate, the
  monitor), that moment is the record's own event time: the earliest it could be scored.
- For scoring, it is the scoring time (`as_of`): everything known then may be used.

Under drift these are the features that move first: an agent whose bookings start to cancel
shows up in the outcomes known today, long before a model trained on matured records learns it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from keel.distinct import codes_of
from keel.table import EVENT_TIME, LABEL_TIME, Column, canonical_text, value_texts

__all__ = [
    "COUNT_PREFIX",
    "RATE_PREFIX",
    "HistoryError",
    "HistoryIndex",
    "HistorySettings",
    "add_history",
    "history_features",
    "settings_from_spec",
    "with_history",
]

RATE_PREFIX = "hist_rate_"
COUNT_PREFIX = "hist_n_"
_MISSING = "\x00missing"
_SPAN = 10**7  # days per key code in the composite (key, day) index: far more than any range


class HistoryError(ValueError):
    """History features cannot be computed (missing time or target columns)."""


@dataclass(frozen=True)
class HistorySettings:
    """Which keys, how far back, and how strongly small counts shrink toward the overall rate."""

    keys: tuple[str, ...]
    window_days: float | None
    prior: float


def history_features(keys: tuple[str, ...] | list[str]) -> list[str]:
    """The feature names for the keys: rate and count per key, in key order."""
    return [name for key in keys for name in (f"{RATE_PREFIX}{key}", f"{COUNT_PREFIX}{key}")]


def _days(values: pd.Series) -> np.ndarray:
    """Whole days since the epoch; -1 for a missing time."""
    stamps = pd.to_datetime(values, errors="coerce")
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    # Whatever the resolution (pandas 3 reads dates as microseconds), count whole days.
    whole = stamps.to_numpy().astype("datetime64[D]").astype("int64")
    days: np.ndarray = np.where(stamps.isna().to_numpy(), -1, whole)
    return days


def _key_text(values: pd.Series) -> pd.Series:
    return canonical_text(values).fillna(_MISSING).astype(str)


_SMALL = 64  # up to this many records, key values are read in plain Python (an API request)


def _key_codes(
    values: pd.Series | np.ndarray, codes: dict[str, int], dtype: object = None
) -> np.ndarray:
    """Each value's code in the index; a value never seen gets one beyond every indexed one.

    `values` is a column of records, or its values as an array read with `dtype` (the dtype the
    column would have in a frame); both give the same codes.
    """
    unseen = len(codes)
    dtype = values.dtype if dtype is None else dtype
    texts = value_texts(values.tolist(), dtype) if len(values) <= _SMALL else None
    if texts is not None:
        return np.array([codes.get(_MISSING if t is None else t, unseen) for t in texts], "int64")
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=dtype)
    return codes_of(_key_text(series), codes, absent=unseen)  # missing has a text of its own


@dataclass(frozen=True)
class _KeyIndex:
    codes: dict[str, int]
    composite: np.ndarray  # code * _SPAN + day, sorted
    cumulative: np.ndarray  # label sum over `composite`, with a leading 0


def _index(codes: np.ndarray, days: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    composite = codes * _SPAN + days
    order = np.argsort(composite, kind="stable")
    return composite[order], np.concatenate([[0.0], np.cumsum(labels[order])])


def _counts(
    composite: np.ndarray,
    cumulative: np.ndarray,
    codes: np.ndarray,
    days: np.ndarray,
    window_days: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per record: count and label sum of indexed rows with its code and a day in [day-w, day)."""
    end = codes * _SPAN + days
    start = codes * _SPAN + (days - int(np.ceil(window_days)) if window_days else 0)
    if len(end) <= _SMALL:
        high = np.searchsorted(composite, end, side="left")
        low = np.searchsorted(composite, start, side="left")
    else:
        # Searching in sorted order is cache-friendly, several times faster on large batches;
        # `start` sorts in the same order as `end` (same code, a fixed number of days before).
        order = np.argsort(end, kind="stable")
        high, low = np.empty_like(order), np.empty_like(order)
        high[order] = np.searchsorted(composite, end[order], side="left")
        low[order] = np.searchsorted(composite, start[order], side="left")
    return (high - low).astype("float64"), cumulative[high] - cumulative[low]


@dataclass(frozen=True)
class HistoryIndex:
    """The known outcomes of a pool, indexed by key value and day, for fast as-of lookups.

    Built once from a pool (the source table), it answers for any records and any time what
    `add_history` would: an API process builds it when it loads a model and reuses it per
    request.
    """

    settings: HistorySettings
    total: tuple[np.ndarray, np.ndarray]
    keys: dict[str, _KeyIndex]

    @classmethod
    def build(cls, pool: pd.DataFrame, settings: HistorySettings, target: str) -> HistoryIndex:
        """Index the rows of `pool` that have a label and a label time."""
        missing = {LABEL_TIME, target, *settings.keys} - set(pool.columns)
        if missing:
            raise HistoryError(f"history features need the columns {sorted(missing)}")
        # Only the columns the index reads: a row filter copies every column it is given.
        needed = pool[list(dict.fromkeys([LABEL_TIME, target, *settings.keys]))]
        known = needed[needed[target].notna() & needed[LABEL_TIME].notna()]
        days = _days(known[LABEL_TIME])
        known, days = known[days >= 0], days[days >= 0]
        labels = pd.to_numeric(known[target], errors="coerce").to_numpy(dtype="float64")
        zeros = np.zeros(len(known), dtype="int64")
        total = _index(zeros, days, labels)
        keys = {}
        for key in settings.keys:
            codes, uniques = pd.factorize(_key_text(known[key]))
            composite, cumulative = _index(codes.astype("int64"), days, labels)
            keys[key] = _KeyIndex({str(u): i for i, u in enumerate(uniques)}, composite, cumulative)
        return cls(settings, (total[0], total[1]), keys)

    def apply(self, records: pd.DataFrame, as_of: dt.datetime | None = None) -> pd.DataFrame:
        """Add the history features to `records` (see `add_history`)."""
        settings = self.settings
        missing = set(settings.keys) - set(records.columns)
        if as_of is None and EVENT_TIME not in records.columns:
            missing.add(EVENT_TIME)
        if missing:
            raise HistoryError(f"history features need the columns {sorted(missing)}")
        if as_of is None:
            days = _days(records[EVENT_TIME])
        else:
            days = np.full(len(records), _day_of(as_of), dtype="int64")
        added = self._features(
            {key: _key_codes(records[key], index.codes) for key, index in self.keys.items()},
            days,
        )
        # One concatenation, not a column insert per feature (an API request is one record).
        kept = records.drop(columns=[c for c in added if c in records.columns])
        return pd.concat([kept, pd.DataFrame(added, index=records.index)], axis=1)

    def lookup(
        self, columns: Mapping[str, Column], rows: int, as_of: dt.datetime
    ) -> dict[str, np.ndarray]:
        """The features `apply` adds as of `as_of`, for records held as columns.

        Args:
            columns: Key column name -> (values, dtype): each key's values as an array, read
                with the dtype the column would have in a frame (see
                `keel.matrix.matrix_from_columns`).
            rows: The number of records.
            as_of: The scoring time.

        Returns:
            Feature name -> values (float64), exactly what `apply` adds to a frame of the same
            records; no frame is built (an API request scores in a fraction of a millisecond).

        Raises:
            HistoryError: A key column is missing.
        """
        missing = set(self.settings.keys) - set(columns)
        if missing:
            raise HistoryError(f"history features need the columns {sorted(missing)}")
        codes = {
            key: _key_codes(columns[key][0], index.codes, columns[key][1])
            for key, index in self.keys.items()
        }
        return self._features(codes, np.full(rows, _day_of(as_of), dtype="int64"))

    def _features(self, codes: Mapping[str, np.ndarray], days: np.ndarray) -> dict[str, np.ndarray]:
        """Rate and count per key for records with these key codes and days (-1: no time)."""
        settings = self.settings
        timed = days >= 0  # a record without a time gets no history (missing values)
        days = np.where(timed, days, 0)
        none = np.zeros(len(days), dtype="int64")
        total, positive = _counts(*self.total, none, days, settings.window_days)
        with np.errstate(invalid="ignore", divide="ignore"):
            base = np.where(total > 0, positive / total, np.nan)
        added: dict[str, np.ndarray] = {}
        for key, index in self.keys.items():
            count, hits = _counts(
                index.composite, index.cumulative, codes[key], days, settings.window_days
            )
            rate = (hits + settings.prior * base) / (count + settings.prior)
            added[f"{RATE_PREFIX}{key}"] = np.where(timed, rate, np.nan)
            added[f"{COUNT_PREFIX}{key}"] = np.where(timed, count, np.nan)
        return added


def _day_of(as_of: dt.datetime) -> int:
    """The day number of a scoring time (UTC), clipped to the index's span."""
    try:
        moment = as_of.astimezone(dt.UTC) if as_of.tzinfo else as_of
    except OverflowError:  # within a day of year 1 or 9999: its own date will do
        moment = as_of
    # Any year a datetime holds, without nanosecond overflow; clipped to the index's span.
    return min(max((moment.date() - dt.date(1970, 1, 1)).days, 0), _SPAN - 1)


def add_history(
    records: pd.DataFrame,
    pool: pd.DataFrame,
    *,
    settings: HistorySettings,
    target: str,
    as_of: dt.datetime | None = None,
) -> pd.DataFrame:
    """Add the history features to `records`, from the outcomes in `pool`.

    Args:
        records: The records to describe (with the key columns, and the event time column
            unless `as_of` is given).
        pool: Records with known outcomes: the key columns, the target and the label time
            column (rows without a label or label time are ignored).
        settings: Keys, trailing window and prior.
        target: The label column of `pool`.
        as_of: The scoring time: outcomes known before its day count. Without it, each
            record's own event time (training, evaluation).

    Returns:
        A copy of `records` with `hist_rate_<key>` and `hist_n_<key>` for every key; an
        outcome known on the record's own day is not counted ("before" is strict, by days).

    Raises:
        HistoryError: A needed column is missing.
    """
    if not settings.keys:
        return records
    return HistoryIndex.build(pool, settings, target).apply(records, as_of)


def settings_from_spec(history: dict[str, Any]) -> HistorySettings | None:
    """The settings a fitted feature spec recorded (None when it has no history features)."""
    if not history or not history.get("keys"):
        return None
    return HistorySettings(
        keys=tuple(history["keys"]),
        window_days=history.get("window_days"),
        prior=float(history["prior"]),
    )


def with_history(
    records: pd.DataFrame,
    pool: pd.DataFrame,
    history: dict[str, Any],
    target: str,
    as_of: dt.datetime | None = None,
) -> pd.DataFrame:
    """`add_history` with the settings a fitted feature spec recorded; a no-op without any."""
    settings = settings_from_spec(history)
    if settings is None:
        return records
    return add_history(records, pool, settings=settings, target=target, as_of=as_of)
