"""`keel.treeshap`: contributions from per-leaf tables equal XGBoost's own TreeSHAP
(`pred_contribs`), on models that exercise every kind of split and path."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from keel.treeshap import build_tables

TYPES = ["q"] * 6 + ["c", "c"]  # 6 numbers, a 3-category and a 12-category column


def _data(rng: np.random.Generator, rows: int, missing: float) -> np.ndarray:
    matrix = rng.normal(size=(rows, len(TYPES)))
    matrix[:, 6] = rng.integers(0, 3, rows)
    matrix[:, 7] = rng.integers(0, 12, rows)
    matrix[rng.random(matrix.shape) < missing] = np.nan
    return matrix


def _dmatrix(matrix: np.ndarray, label: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(matrix, label=label, feature_types=TYPES, enable_categorical=True)


def _train(params: dict[str, object], rounds: int = 30, seed: int = 3) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    matrix = _data(rng, 3000, missing=0.08)
    x = np.nan_to_num(matrix)
    margin = x[:, 0] * x[:, 1] + (x[:, 6] == 1) - np.isin(x[:, 7], [2, 5, 7, 11]) + x[:, 2] ** 2
    label = margin + rng.normal(scale=0.5, size=len(x))
    if params.get("objective", "binary:logistic") != "reg:squarederror":
        label = (label > np.median(label)).astype("float64")
    base = {"objective": "binary:logistic", "max_cat_to_onehot": 4, "nthread": 1, "seed": seed}
    return xgb.train({**base, **params}, _dmatrix(matrix, label), num_boost_round=rounds)


def _assert_matches(booster: xgb.Booster, rows: int = 300) -> None:
    tables = build_tables(booster)
    assert tables is not None
    matrix = _data(np.random.default_rng(rows), rows, missing=0.1)
    # Values at the edges: a category never seen, a negative one, numbers beyond every split.
    edges = [(7, 40.0), (6, -1.0), (0, 1e30), (1, -1e30)]
    for row, (column, value) in enumerate(edges[:rows]):
        matrix[row, column] = value
    want = booster.predict(_dmatrix(matrix), pred_contribs=True)
    got = tables.contributions(matrix)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * max(1.0, np.abs(want).max()))
    margin = booster.predict(_dmatrix(matrix), output_margin=True)
    np.testing.assert_allclose(got.sum(axis=1), margin, rtol=0, atol=1e-5)


@pytest.mark.parametrize("depth", [1, 2, 4, 6, 8])
def test_contributions_equal_xgboost_treeshap(depth: int) -> None:
    # Depth 6 and 8 over 8 features: paths split on the same feature more than once.
    _assert_matches(_train({"max_depth": depth, "eta": 0.3}))


def test_one_hot_and_partition_categorical_splits() -> None:
    booster = _train({"max_depth": 4, "max_cat_to_onehot": 4})
    dumped = "".join(booster.get_dump(dump_format="json"))
    assert '"split": "f6"' in dumped and '"split": "f7"' in dumped  # both kinds are used
    _assert_matches(booster)


def test_regression_lossguide_and_a_tree_that_is_one_leaf() -> None:
    _assert_matches(
        _train(
            {
                "objective": "reg:squarederror",
                "grow_policy": "lossguide",
                "max_leaves": 24,
                "max_depth": 0,
            }
        )
    )
    stumps = _train({"max_depth": 3, "min_split_loss": 1e6})  # every tree is its root leaf
    assert all(dump.count("leaf") == 1 for dump in stumps.get_dump())
    _assert_matches(stumps)


def test_many_rows_in_blocks_on_threads_and_one_row() -> None:
    booster = _train({"max_depth": 5})
    _assert_matches(booster, rows=1)
    _assert_matches(booster, rows=1000)
    tables = build_tables(booster)
    assert tables is not None
    matrix = _data(np.random.default_rng(5), 1000, missing=0.1)
    np.testing.assert_array_equal(
        tables.contributions(matrix, threads=3), tables.contributions(matrix, threads=1)
    )


def test_random_forest_rounds() -> None:
    _assert_matches(_train({"max_depth": 4, "num_parallel_tree": 4, "subsample": 0.8}, rounds=5))


def test_no_tables_where_they_cannot_stand_in() -> None:
    assert build_tables(_train({"objective": "multi:softprob", "num_class": 3}, rounds=3)) is None
    matrix = _data(np.random.default_rng(2), 500, missing=0.0)
    two_targets = xgb.DMatrix(matrix[:, :6], label=matrix[:, :2])
    for strategy in ("one_output_per_tree", "multi_output_tree"):
        booster = xgb.train(
            {"multi_strategy": strategy, "tree_method": "hist", "max_depth": 3}, two_targets, 3
        )
        assert build_tables(booster) is None
    assert build_tables(_train({"booster": "dart", "max_depth": 3}, rounds=3)) is None
    assert build_tables(_train({"max_depth": 6}), max_bytes=1024) is None
    # Category codes in the millions: a set per categorical split would not fit.
    rng = np.random.default_rng(4)
    matrix = _data(rng, 2000, missing=0.0)
    matrix[:, 7] = rng.integers(0, 3, 2000) * 1_000_000
    label = (matrix[:, 7] == 1_000_000).astype("float64")  # the split's set: {1,000,000}
    wide = xgb.train({"max_depth": 2}, _dmatrix(matrix, label), num_boost_round=3)
    assert build_tables(wide, max_bytes=1_000_000) is None
    tables = build_tables(wide)
    assert tables is not None  # within the default budget, and right
    want = wide.predict(_dmatrix(matrix[:50]), pred_contribs=True)
    np.testing.assert_allclose(tables.contributions(matrix[:50]), want, rtol=0, atol=1e-5)
