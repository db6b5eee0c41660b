"""`score_matrix`'s reason codes, on a model with both kinds of categorical split: exact ones
come from the per-leaf tables (`keel.treeshap`) and must be XGBoost's TreeSHAP on a DMatrix that
names every feature and marks the categorical ones, to float32 rounding; approximate ones are
computed on a plain DMatrix (no feature names or types) and must be bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from keel.features import FeatureSpec
from keel.model import ModelBundle
from keel.scoring import leaf_tables, score_matrix

SPEC = FeatureSpec(
    numeric=["x", "y"],
    categories={"few": ["a", "b", "c"], "many": [f"k{i}" for i in range(12)]},
    derived={},
    order=["x", "few", "y", "many"],
)
TYPES = ["q", "c", "q", "c"]


def _matrix(rng: np.random.Generator, rows: int, missing: float) -> np.ndarray:
    """Rows in SPEC's order (category codes as floats), a share of every column missing."""
    matrix = np.column_stack(
        [
            rng.normal(size=rows),
            rng.integers(0, 3, rows).astype("float64"),
            rng.normal(size=rows),
            rng.integers(0, 12, rows).astype("float64"),
        ]
    )
    matrix[rng.random((rows, 4)) < missing] = np.nan
    return matrix


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    rng = np.random.default_rng(7)
    rows = 3000
    matrix = _matrix(rng, rows, missing=0.05)
    margin = matrix[:, 0] + (matrix[:, 1] == 1) - 0.5 * np.isin(matrix[:, 3], [2, 5, 7, 11])
    label = (np.nan_to_num(margin) + rng.normal(scale=0.5, size=rows) > 0).astype("float64")
    train = xgb.DMatrix(
        matrix, label=label, feature_names=SPEC.order, feature_types=TYPES, enable_categorical=True
    )
    # max_cat_to_onehot 4: `few` gets one-hot splits, `many` partition splits.
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "max_cat_to_onehot": 4, "nthread": 1},
        train,
        num_boost_round=40,
    )
    dumped = "".join(booster.get_dump(dump_format="json"))
    assert '"split": "few"' in dumped and '"split": "many"' in dumped  # both are used
    return ModelBundle(booster=booster, spec=SPEC, metadata={"device": "cpu"})


@pytest.mark.parametrize("method", ["shap", "approx"])
@pytest.mark.parametrize("rows", [1, 3, 500])  # the one-thread path and the threaded one
def test_reasons_are_those_of_a_named_and_typed_dmatrix(
    bundle: ModelBundle, method: str, rows: int
) -> None:
    matrix = _matrix(np.random.default_rng(rows), rows, missing=0.1)
    scored = score_matrix(bundle, matrix, threshold=0.5, reason_codes=4, reason_method=method)

    named = xgb.DMatrix(
        matrix,
        feature_names=SPEC.order,
        feature_types=TYPES,
        enable_categorical=True,
    )
    reference = bundle.booster.predict(
        named, pred_contribs=True, approx_contribs=method == "approx"
    )
    got = {
        (i, reason["feature"]): reason["contribution"]
        for i, reasons in enumerate(scored.reasons)
        for reason in reasons
    }
    want = {
        (i, name): round(float(reference[i, j]), 6)
        for i in range(rows)
        for j, name in enumerate(SPEC.order)
    }
    assert got.keys() <= want.keys() and len(got) == rows * 4
    if method == "approx":
        assert got == want
    else:  # XGBoost sums in float32: the last of the 6 places may differ
        assert got == {key: pytest.approx(want[key], abs=3e-6) for key in got}
        tables = leaf_tables(bundle.booster)
        assert tables is not None
        exact = tables.contributions(matrix)
        assert got == {
            (i, name): round(float(exact[i, j]), 6)
            for i in range(rows)
            for j, name in enumerate(SPEC.order)
        }
    np.testing.assert_array_equal(scored.score, bundle.booster.inplace_predict(matrix))


def test_exact_reasons_without_tables_come_from_xgboost() -> None:
    """A model the tables cannot stand in for (DART) still gets exact reasons, XGBoost's."""
    rng = np.random.default_rng(11)
    matrix = _matrix(rng, 800, missing=0.05)
    label = (np.nan_to_num(matrix[:, 0]) > 0).astype("float64")
    train = xgb.DMatrix(matrix, label=label, feature_types=TYPES, enable_categorical=True)
    booster = xgb.train({"booster": "dart", "max_depth": 3, "nthread": 1}, train, 5)
    dart = ModelBundle(booster=booster, spec=SPEC, metadata={"device": "cpu"})
    assert leaf_tables(booster) is None
    scored = score_matrix(dart, matrix[:5], threshold=0.5, reason_codes=4)
    reference = booster.predict(
        xgb.DMatrix(matrix[:5], feature_types=TYPES, enable_categorical=True), pred_contribs=True
    )
    got = {(i, r["feature"]): r["contribution"] for i, rs in enumerate(scored.reasons) for r in rs}
    assert got == {
        (i, name): round(float(reference[i, j]), 6)
        for i in range(5)
        for j, name in enumerate(SPEC.order)
    }
