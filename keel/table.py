"""Reading the source table and giving each record its identity and times."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.core.util.hashing import combine_hash_arrays

from keel.config import DataConfig, EntityKeyConfig
from keel.distinct import distinct_codes, per_distinct
from keel.expressions import evaluate

__all__ = [
    "EVENT_TIME",
    "LABEL_TIME",
    "ORDER_TIME",
    "Column",
    "SourceError",
    "add_derived",
    "add_entity_key",
    "add_times",
    "canonical_text",
    "content_digest",
    "contiguous",
    "read_source",
    "value_texts",
]

log = logging.getLogger(__name__)

# Reserved column names for the time semantics every stage agrees on.
EVENT_TIME = "_event_time"
LABEL_TIME = "_label_time"
ORDER_TIME = "_order_time"


class SourceError(ValueError):
    """The source file cannot be read as a table."""


# Whole numbers below this are written as integers; larger ones (beyond float64's exact
# integers, and beyond Int64) keep their float text.
_EXACT = 2.0**53


def _number_text(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return value
    number = float(value)
    whole = np.isfinite(number) and number == np.floor(number) and abs(number) < _EXACT
    return str(int(number)) if whole else repr(number)


_PLAIN = (str, bool, int, float, np.bool_, np.integer, np.floating)


Column = tuple[np.ndarray, object]
"""One column of a few records without a frame: its values as a 1-D array (any dtype; object
for text) and the pandas dtype a frame of the same records would give the column (the reading
rules, as in `value_texts`, depend on it)."""


def value_texts(items: list[object], dtype: object) -> list[str | None] | None:
    """`canonical_text` value by value in plain Python (fast for a few values), or None where
    only pandas gives the exact answer (extension dtypes, unusual objects).

    Args:
        items: The values of a column (`Series.tolist()` or a numpy column's items).
        dtype: The column's dtype: the rule depends on it, as in `canonical_text`.
    """
    if isinstance(dtype, pd.StringDtype):
        return [v if isinstance(v, str) else None for v in items]
    if not isinstance(dtype, np.dtype):
        return None  # pandas extension dtypes (nullable numbers, categoricals, ...)
    if dtype.kind == "b":
        return [str(bool(v)) for v in items]
    if dtype.kind in "iu":
        return [str(int(v)) for v in items]  # type: ignore[call-overload]
    if dtype.kind == "f":
        return [None if math.isnan(v) else _float_text(v) for v in items]  # type: ignore[arg-type]
    if dtype.kind == "O":
        if not all(v is None or isinstance(v, _PLAIN) for v in items):
            return None
        return [None if _missing(v) else _plain_text(v) for v in items]
    return None


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _float_text(number: float) -> str:
    """9.0 -> '9', 1.5 -> '1.5'; whole numbers beyond 2**53 keep their float text."""
    if math.isfinite(number) and number == math.floor(number) and abs(number) < _EXACT:
        return str(int(number))
    return repr(float(number))


def _plain_text(value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer | float | np.floating):
        return str(_number_text(value))
    return str(value)


def canonical_text(values: pd.Series) -> pd.Series:
    """Each value as text, independent of the column's dtype and of the other rows.

    9, 9.0 and '9' all become '9'; 1.5 becomes '1.5'; missing stays missing. So a value keeps
    its text when a column changes dtype (an int column with one null arrives as float).
    """
    return per_distinct(values, _canonical_text)


def _canonical_text(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        if values.dtype == object:
            return values.map(_number_text, na_action="ignore").astype("string")
        return values.astype("string")
    if pd.api.types.is_integer_dtype(values):
        return values.astype("Int64").astype("string")
    numbers = values.astype("float64")
    whole = np.isfinite(numbers) & (numbers == np.floor(numbers)) & (numbers.abs() < _EXACT)
    text = numbers.where(whole).astype("Int64").astype("string")
    fraction = ~whole & numbers.notna()  # repr only where needed: it is a Python call per value
    if fraction.any():
        text[fraction] = numbers[fraction].map(repr).astype("string")
    return text


def contiguous(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with each Arrow-backed column in one chunk (values and dtypes unchanged).

    A parquet file is read as one Arrow chunk per row group, and every row selection on a
    chunked column is several times slower: Great Expectations selects rows dozens of times.
    """
    out = frame.copy(deep=False)
    for name in frame.columns[frame.dtypes.map(_chunked_dtype).to_numpy(dtype=bool)]:
        arrow = frame[name].array.__arrow_array__()
        if getattr(arrow, "num_chunks", 1) > 1:
            out[name] = pd.Series(
                pd.array(arrow.combine_chunks(), dtype=frame[name].dtype), index=frame.index
            )
    return out


def _chunked_dtype(dtype: object) -> bool:
    return isinstance(dtype, pd.ArrowDtype) or (
        isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"
    )


def read_source(path: Path) -> pd.DataFrame:
    """Read a CSV (optionally gzip-compressed) or parquet file.

    Args:
        path: The source file.

    Returns:
        The table, with pandas' own type inference.

    Raises:
        SourceError: Missing, empty, not a table, or not UTF-8; the message says which.
    """
    if not path.is_file():
        raise SourceError(f"source file not found: {path}")
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if suffixes.endswith(".parquet"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise SourceError(f"{path} is empty: expected a header row and data") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (pd.errors.ParserError, csv.Error, OSError, ValueError, EOFError) as exc:
        raise SourceError(f"{path} cannot be read as a table: {exc}") from None
    if frame.shape[1] < 2:
        raise SourceError(
            f"{path} has {frame.shape[1]} column(s): it does not look like a CSV or parquet table"
        )
    if frame.empty:
        raise SourceError(f"{path} has a header but no rows")
    return frame


def add_entity_key(frame: pd.DataFrame, config: EntityKeyConfig) -> pd.DataFrame:
    """Add a stable, unique record key as the first column.

    Args:
        frame: The source table.
        config: How the key is made.

    Returns:
        A new frame with the key column first.
    """
    if config.method == "column":
        assert config.column is not None
        if config.column not in frame.columns:
            raise SourceError(f"entity key column '{config.column}' is missing from the source")
        key = frame[config.column].astype("string")
    elif config.method == "row_number":
        key = pd.Series(range(len(frame)), index=frame.index).map("r{:09d}".format)
    else:
        # Hash the canonical text of each value, so a row's key does not depend on the dtype
        # its column got from the other rows; identical rows are numbered in source order.
        digest = content_digest(frame)
        occurrence = digest.groupby(digest).cumcount()
        key = _digest_keys(digest, occurrence)
    out = frame.copy(deep=False)  # copy-on-write: the caller's frame is left as it is
    if config.name in out.columns and config.name != config.column:
        raise SourceError(f"entity key name '{config.name}' clashes with a source column")
    if config.name != config.column:
        out.insert(0, config.name, key.astype("str"))
    return out


def content_digest(frame: pd.DataFrame) -> pd.Series:
    """Per row, a 64-bit hash of its values' canonical text (missing: NUL), column by column.

    The same numbers as `pd.util.hash_pandas_object(frame.apply(canonical_text).fillna("\\x00"),
    index=False)` (`tests/unit/test_table.py` holds it to that), computed from each column's
    distinct values: their text and hash once each, then one integer lookup per row, in place
    of a text column per source column (about 1 s less on a million bookings).
    """
    columns = [_text_hashes(frame[name]) for name in frame.columns]
    combined = combine_hash_arrays(iter(columns), len(columns))
    return pd.Series(combined, index=frame.index, dtype="uint64")


def _text_hashes(values: pd.Series) -> np.ndarray:
    # The canonical text directly (not `canonical_text`, which would factorize again).
    found = distinct_codes(values)
    if found is None:
        text = _canonical_text(values).fillna("\x00").to_numpy(dtype=object)
        return np.asarray(pd.util.hash_array(text), dtype="uint64")
    codes, uniques = found  # missing: -1, which reads the trailing NUL
    text = np.empty(len(uniques) + 1, dtype=object)  # not np.append: NumPy text drops a NUL
    text[:-1] = _canonical_text(pd.Series(uniques)).fillna("\x00").to_numpy(dtype=object)
    text[-1] = "\x00"
    hashed: np.ndarray = np.asarray(pd.util.hash_array(text), dtype="uint64")[codes]
    return hashed


def _digest_keys(digest: pd.Series, occurrence: pd.Series) -> pd.Series:
    """`f"{digest:016x}-{occurrence}"` per row, in Arrow (no Python call per row)."""
    raw = digest.to_numpy().astype(">u8").tobytes().hex().encode("ascii")
    hexes = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(digest), [None, pa.py_buffer(raw)]
    )
    texts = hexes.cast(pa.binary()).cast(pa.string())
    counts = pa.array(occurrence.to_numpy()).cast(pa.string())
    keys = pc.binary_join_element_wise(texts, counts, "-")
    return pd.Series(pd.array(keys, dtype="str"), index=digest.index)


def add_derived(frame: pd.DataFrame, derived: dict[str, str]) -> pd.DataFrame:
    """Evaluate named expressions in order; later ones may use earlier ones."""
    out = frame.copy()
    for name, expr in derived.items():
        out[name] = evaluate(expr, out)
    return out


def add_times(frame: pd.DataFrame, config: DataConfig) -> pd.DataFrame:
    """Add the derived columns and the reserved event, label and order time columns."""
    out = add_derived(frame, config.derived)
    for reserved, name in (
        (EVENT_TIME, config.event_time),
        (LABEL_TIME, config.label_time),
        (ORDER_TIME, config.order_time),
    ):
        if name is not None:
            # Aware or mixed-offset times become naive UTC, like every other time in Keel.
            out[reserved] = pd.to_datetime(out[name], errors="coerce", utc=True).dt.tz_localize(
                None
            )
            missing = int(out[reserved].isna().sum())
            if missing:
                log.warning("%d rows have no %s ('%s')", missing, reserved.strip("_"), name)
    return out
