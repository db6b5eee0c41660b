"""`build_matrix` gives exactly the values of `build_features`, for any input types, and
`matrix_from_columns` exactly those of `build_matrix`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.features import FeatureError, FeatureSpec, build_features
from keel.matrix import SMALL_ROWS, build_matrix, matrix_from_columns, value_text

SPEC = FeatureSpec(
    numeric=["n_float", "n_int", "n_mixed"],
    categories={
        "c_text": ["9", "A", "B", "x y"],
        "c_num": ["1", "2.5", "9"],
        "c_obj": ["1", "True", "a"],
    },
    derived={"d_sum": "n_float + n_int"},
    order=["n_float", "c_text", "n_int", "c_num", "n_mixed", "c_obj", "d_sum"],
)

# Numbers beyond float32's range are missing to the model; categories of whole numbers beyond
# int64 are not supported by `canonical_text` (it raises), so categorical inputs stay below.
huge = st.floats(min_value=1e38, max_value=1e300) | st.floats(min_value=-1e300, max_value=-1e38)
small = st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda x: not math.isfinite(x) or abs(x) < 1e15
)
floats = small | huge
texts = st.sampled_from(["9", "A", "B", "x y", "a", "1", "2.5", "", " 9", "True", "unseen"])
plain = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), small, texts)


def expected(frame: pd.DataFrame) -> np.ndarray:
    features = build_features(frame, SPEC)
    columns = []
    for name in SPEC.order:
        if name in SPEC.categories:
            codes = features[name].cat.codes.to_numpy().astype("float64")
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            columns.append(features[name].to_numpy("float64"))
    return np.column_stack(columns)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.sampled_from([1, 2, 5, SMALL_ROWS, SMALL_ROWS + 3]))
    names = st.lists(st.sampled_from(["9", "A", "B", "x y", "zz", None]), min_size=n, max_size=n)
    return pd.DataFrame(
        {
            "n_float": draw(st.lists(floats, min_size=n, max_size=n)),
            "n_int": draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n)),
            "n_mixed": pd.Series(
                draw(st.lists(plain | huge, min_size=n, max_size=n)), dtype=object
            ),
            "c_text": draw(names),  # pandas 3: the `str` dtype (with NaN for None)
            "c_num": draw(st.lists(small | st.integers(0, 10), min_size=n, max_size=n)),
            "c_obj": pd.Series(draw(st.lists(plain, min_size=n, max_size=n)), dtype=object),
            "extra": "ignored",
        }
    )


@settings(max_examples=150, deadline=None)
@given(frame=frames())
def test_the_matrix_holds_the_values_of_build_features(frame: pd.DataFrame) -> None:
    np.testing.assert_array_equal(build_matrix(frame, SPEC), expected(frame))


def as_columns(frame: pd.DataFrame) -> dict[str, tuple[np.ndarray, object]]:
    return {name: (frame[name].to_numpy(dtype=object), frame[name].dtype) for name in frame}


@settings(max_examples=150, deadline=None)
@given(frame=frames())
def test_records_held_as_columns_get_the_matrix_of_their_frame(frame: pd.DataFrame) -> None:
    # The API's path (no frame) and batch scoring's, bit for bit; over SMALL_ROWS records the
    # frame takes the pandas path, and the columns still give the same values.
    np.testing.assert_array_equal(
        matrix_from_columns(as_columns(frame), len(frame), SPEC), build_matrix(frame, SPEC)
    )


def test_categorical_dtypes_and_nullable_numbers_fall_back_to_pandas() -> None:
    frame = pd.DataFrame(
        {
            "n_float": pd.array([1.5, None], dtype="Float64"),
            "n_int": pd.array([1, None], dtype="Int64"),
            "n_mixed": ["3", "x"],
            "c_text": pd.Categorical(["A", "nope"]),
            "c_num": pd.array([1, 9], dtype="Int64"),
            "c_obj": [True, "a"],
        }
    )
    np.testing.assert_array_equal(build_matrix(frame, SPEC), expected(frame))
    np.testing.assert_array_equal(
        matrix_from_columns(as_columns(frame), len(frame), SPEC), expected(frame)
    )


def test_value_text_is_what_build_features_holds() -> None:
    frame = pd.DataFrame(
        {
            "n_float": [73.8, np.nan],
            "n_int": [2, 3],
            "n_mixed": [1e39, "4"],
            "c_text": ["x y", None],
            "c_num": [2.5, 3.0],
            "c_obj": [True, 1.0],
        }
    )
    matrix = build_matrix(frame, SPEC)
    held = build_features(frame, SPEC).astype("object")
    for i in range(len(frame)):
        for j, name in enumerate(SPEC.order):
            value = held.iloc[i, j]
            want = None if pd.isna(value) else str(value)
            assert value_text(matrix[i, j], SPEC.categories.get(name)) == want, (i, name)
    assert math.isnan(matrix[0, SPEC.order.index("n_mixed")])  # beyond float32: missing


def test_a_missing_column_is_refused() -> None:
    frame = pd.DataFrame({c: [1] for c in ["n_float", "n_int", "n_mixed", "c_text", "c_num"]})
    with pytest.raises(FeatureError, match=r"lack required feature columns: \['c_obj'\]"):
        build_matrix(frame, SPEC)
    with pytest.raises(FeatureError, match=r"lack required feature columns: \['c_obj'\]"):
        matrix_from_columns(as_columns(frame), 1, SPEC)
