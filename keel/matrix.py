"""The model matrix as plain numbers: what scoring feeds XGBoost.

`build_features` returns a pandas frame whose categorical columns are pandas categoricals.
Handing that frame to XGBoost costs milliseconds per call whatever the row count (XGBoost
re-reads every categorical column), which dominates the cost of scoring one record online. So
scoring builds the same matrix as a float64 array: numeric columns as `build_features` makes
them, categorical columns as their codes in the spec's category list, missing and unseen values
as NaN. Those codes are the ones the model learned from (training encodes with the same lists),
so predictions and contributions are bit-identical to the pandas path.

Small inputs (an API request) are encoded value by value in plain Python, which gives exactly
`canonical_text`'s result for the types it accepts and falls back to the pandas functions for
anything else; large inputs use the pandas functions column by column.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from keel.features import (
    FLOAT32_MAX,
    FeatureError,
    FeatureSpec,
    derived_feature,
    encode_categories,
    numeric_feature,
)
from keel.table import Column, value_texts

__all__ = ["SMALL_ROWS", "build_matrix", "matrix_from_columns", "value_text"]

SMALL_ROWS = 64
"""Up to this many rows, categorical values are encoded in plain Python (no pandas calls)."""


def build_matrix(frame: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """Turn raw records into the model matrix, in the spec's column order.

    Args:
        frame: Raw records (any extra columns are ignored).
        spec: The model's fitted feature spec.

    Returns:
        A C-contiguous float64 array (rows x `spec.order`): the values of `build_features`,
        with each categorical column as its category code (NaN when missing or unseen).

    Raises:
        FeatureError: A required column is missing.
    """
    missing = sorted(spec.required_columns - set(frame.columns))
    if missing:
        raise FeatureError(f"records lack required feature columns: {missing}")
    if len(frame) <= SMALL_ROWS and frame.columns.is_unique:
        # One conversion to plain Python values for every column (pandas per column would cost
        # far more than the work), each read with its column's dtype.
        cells = frame.to_numpy(dtype=object)
        columns = {
            name: (cells[:, k], dtype)
            for k, (name, dtype) in enumerate(zip(frame.columns, frame.dtypes, strict=True))
        }
        return _small_matrix(columns, len(frame), spec, lambda: frame)
    out = np.empty((len(frame), len(spec.order)), dtype="float64")
    for j, name in enumerate(spec.order):
        if name in spec.categories:
            out[:, j] = _codes(frame[name], spec.categories[name])
        elif name in spec.derived:
            out[:, j] = derived_feature(frame, spec.derived[name]).to_numpy("float64")
        elif _plain_numbers(frame[name].dtype):
            out[:, j] = _finite(frame[name].to_numpy().astype("float64"))
        else:
            out[:, j] = numeric_feature(frame[name]).to_numpy("float64")
    return out


def matrix_from_columns(columns: Mapping[str, Column], rows: int, spec: FeatureSpec) -> np.ndarray:
    """`build_matrix` for records held as columns rather than a frame (an API request).

    The values are read exactly as `build_matrix` reads a small frame whose columns have these
    values and dtypes (the same function does both), without building the frame: pandas would
    cost more than the work for a few records. Derived features, and values only pandas encodes
    exactly, are computed on a frame built from the columns.

    Args:
        columns: Column name -> (values, dtype), each with `rows` values.
        rows: The number of records.
        spec: The model's fitted feature spec.

    Returns:
        The matrix `build_matrix` returns for the frame of these columns.

    Raises:
        FeatureError: A required column is missing.
    """
    missing = sorted(spec.required_columns - set(columns))
    if missing:
        raise FeatureError(f"records lack required feature columns: {missing}")

    @functools.cache  # built at most once, and only if a value needs pandas
    def frame() -> pd.DataFrame:
        return pd.DataFrame(
            {name: pd.Series(values, dtype=dtype) for name, (values, dtype) in columns.items()}
        )

    return _small_matrix(columns, rows, spec, frame)


def _small_matrix(
    columns: Mapping[str, Column],
    rows: int,
    spec: FeatureSpec,
    frame: Callable[[], pd.DataFrame],
) -> np.ndarray:
    """The matrix of a few records, value by value in plain Python; `frame()` gives them as a
    frame for what only pandas computes exactly (derived features, extension dtypes)."""
    out = np.empty((rows, len(spec.order)), dtype="float64")
    plain = []  # columns of plain numbers: made finite together, at the end
    for j, name in enumerate(spec.order):
        if name in spec.derived:
            out[:, j] = derived_feature(frame(), spec.derived[name]).to_numpy("float64")
            continue
        values, dtype = columns[name]
        if name in spec.categories:
            texts = value_texts(values.tolist(), dtype)
            out[:, j] = (
                _codes(frame()[name], spec.categories[name])
                if texts is None
                else _lookup(texts, spec.categories[name])
            )
        elif _plain_numbers(dtype):
            out[:, j] = values.astype("float64")
            plain.append(j)
        else:
            out[:, j] = numeric_feature(frame()[name]).to_numpy("float64")
    if plain:
        out[:, plain] = _finite(out[:, plain])
    return out


def value_text(value: float, categories: Sequence[str] | None) -> str | None:
    """A matrix value as text, as `build_features` holds it: a float, or a category's name.

    Args:
        value: One cell of a matrix from `build_matrix`.
        categories: The column's category list, or None for a numeric column.

    Returns:
        The text, or None when the value is missing.
    """
    if math.isnan(value):
        return None
    return categories[int(value)] if categories is not None else str(float(value))


def _plain_numbers(dtype: object) -> bool:
    """Numpy bool, integer or float columns: `numeric_feature` is a plain float64 cast."""
    return isinstance(dtype, np.dtype) and dtype.kind in "biuf"


def _finite(numbers: np.ndarray) -> np.ndarray:
    """`numeric_feature`'s rule: inf and numbers beyond float32's range become missing."""
    with np.errstate(invalid="ignore"):  # NaN compares False: stays missing
        finite: np.ndarray = np.where(np.abs(numbers) <= FLOAT32_MAX, numbers, np.nan)
    return finite


def _codes(values: pd.Series, categories: list[str]) -> np.ndarray:
    """Category codes as floats, NaN for missing and unseen values (`encode_categories`)."""
    codes: np.ndarray = encode_categories(values, categories).codes.astype("float64")
    codes[codes < 0] = np.nan
    return codes


def _lookup(texts: list[str | None], categories: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(categories)}
    return np.array([np.nan if t is None else index.get(t, np.nan) for t in texts], dtype="float64")
