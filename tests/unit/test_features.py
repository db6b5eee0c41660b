"""keel.features: the fitted feature spec, unseen and missing values, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from keel.config import FeaturizeConfig, SplitConfig
from keel.features import (
    SPEC_VERSION,
    FeatureError,
    FeatureSpec,
    build_features,
    count_unseen,
    encode_categories,
    fit_feature_spec,
)
from keel.table import canonical_text

RANDOM = SplitConfig(method="random")
CONFIG = FeaturizeConfig(
    numeric=["n"],
    categorical=["c", "agent"],
    derived={"ratio": "n / k"},
    split=RANDOM,
)
TRAIN = pd.DataFrame(
    {
        "n": [1.0, 2.0, 3.0, 4.0, 5.0],
        "k": [1, 1, 2, 2, 0],
        "c": ["a", "a", "b", "b", "rare"],
        "agent": [9.0, 9.0, 240.0, 240.0, np.nan],
        "ignored": ["x", "y", "z", "w", "v"],
    }
)


@pytest.fixture()
def spec() -> FeatureSpec:
    return fit_feature_spec(TRAIN, CONFIG)


def test_fit_learns_sorted_text_categories_and_order(spec: FeatureSpec) -> None:
    assert spec.numeric == ["n"]
    assert spec.categories == {"c": ["a", "b", "rare"], "agent": ["240", "9"]}
    assert spec.derived == {"ratio": "n / k"}
    assert spec.order == ["n", "c", "agent", "ratio"]
    assert spec.version == SPEC_VERSION
    assert spec.required_columns == {"n", "k", "c", "agent"}


@pytest.mark.parametrize(
    "min_count, expected",
    [(1, ["a", "b", "rare"]), (2, ["a", "b"]), (3, [])],
)
def test_min_category_count_drops_rare_categories(min_count: int, expected: list[str]) -> None:
    config = CONFIG.model_copy(update={"min_category_count": min_count})
    spec = fit_feature_spec(TRAIN, config)
    assert spec.categories["c"] == expected
    out = build_features(TRAIN, spec)
    # A dropped category is treated like an unseen one: missing.
    assert out["c"].isna().sum() == sum(v not in expected for v in TRAIN["c"])


def test_fit_requires_its_columns() -> None:
    with pytest.raises(FeatureError, match=r"records lack required feature columns: \['agent'\]"):
        fit_feature_spec(TRAIN.drop(columns=["agent"]), CONFIG)


def test_build_keeps_order_index_and_dtypes(spec: FeatureSpec) -> None:
    new = TRAIN.iloc[[3, 0]].set_axis([101, 100])
    out = build_features(new, spec)
    assert list(out.columns) == spec.order
    assert list(out.index) == [101, 100]
    assert out["n"].dtype == "float64" and out["ratio"].dtype == "float64"
    assert isinstance(out["c"].dtype, pd.CategoricalDtype)
    assert list(out["n"]) == [4.0, 1.0]
    assert list(out["ratio"]) == [2.0, 1.0]
    assert list(out["c"].astype(str)) == ["b", "a"]


def test_build_with_reordered_config_follows_spec_order() -> None:
    config = FeaturizeConfig(numeric=["n"], categorical=["agent", "c"], split=RANDOM)
    spec = fit_feature_spec(TRAIN, config)
    assert list(build_features(TRAIN[["c", "agent", "n"]], spec).columns) == ["n", "agent", "c"]


def test_categories_are_fixed_by_the_spec(spec: FeatureSpec) -> None:
    only_a = pd.DataFrame({"n": [1.0], "k": [1], "c": ["a"], "agent": [9]})
    out = build_features(only_a, spec)
    assert list(out["c"].cat.categories) == spec.categories["c"]
    assert list(out["agent"].cat.categories) == spec.categories["agent"]
    assert out["c"].cat.codes.tolist() == [0]


def test_unseen_category_becomes_missing_not_an_error(spec: FeatureSpec) -> None:
    new = pd.DataFrame({"n": [1.0, 2.0], "k": [1, 1], "c": ["zzz", "b"], "agent": [999, 9]})
    out = build_features(new, spec)
    assert pd.isna(out["c"].iloc[0]) and out["c"].iloc[1] == "b"
    assert pd.isna(out["agent"].iloc[0]) and out["agent"].iloc[1] == "9"
    assert list(out["c"].cat.categories) == ["a", "b", "rare"]


def test_missing_values_become_missing(spec: FeatureSpec) -> None:
    new = pd.DataFrame({"n": [None, 1.0], "k": [1, None], "c": [None, "a"], "agent": [None, 9.0]})
    out = build_features(new, spec)
    assert pd.isna(out["n"].iloc[0]) and pd.isna(out["ratio"].iloc[1])
    assert pd.isna(out["c"].iloc[0]) and pd.isna(out["agent"].iloc[0])
    assert out["n"].iloc[1] == 1.0 and out["c"].iloc[1] == "a" and out["agent"].iloc[1] == "9"


def test_inf_and_garbage_numbers_become_missing(spec: FeatureSpec) -> None:
    new = pd.DataFrame(
        {
            "n": [np.inf, -np.inf, 3.0, 4.0],
            "k": [1, 1, 0, 1],
            "c": ["a"] * 4,
            "agent": [9] * 4,
        }
    )
    out = build_features(new, spec)
    assert out["n"].isna().tolist() == [True, True, False, False]
    assert out["ratio"].isna().tolist() == [True, True, True, False]  # inf/1, -inf/1, 3/0
    assert not np.isinf(out[["n", "ratio"]].to_numpy()).any()


def test_numeric_text_is_coerced_and_garbage_becomes_missing() -> None:
    spec = fit_feature_spec(TRAIN, CONFIG.model_copy(update={"derived": {}}))
    text = pd.DataFrame({"n": ["1.5", "oops"], "c": ["a", "a"], "agent": [9, 9]})
    built = build_features(text, spec)
    assert built["n"].iloc[0] == 1.5 and pd.isna(built["n"].iloc[1])


def test_derived_feature_over_numeric_text(spec: FeatureSpec) -> None:
    text = pd.DataFrame({"n": ["1.5", "oops"], "k": [1, 1], "c": ["a", "a"], "agent": [9, 9]})
    built = build_features(text, spec)
    assert built["ratio"].iloc[0] == 1.5 and pd.isna(built["ratio"].iloc[1])


@pytest.mark.parametrize(
    "values",
    [
        [9.0, 240.0],
        [9, 240],
        ["9", "240"],
        pd.array([9, 240], dtype="Int64"),
        pd.Series(["9", 240], dtype=object),
    ],
    ids=["float", "int", "str", "Int64", "object"],
)
def test_float_coded_categories_match_int_and_text(spec: FeatureSpec, values: object) -> None:
    new = pd.DataFrame({"n": [1.0, 1.0], "k": [1, 1], "c": ["a", "a"], "agent": values})
    out = build_features(new, spec)
    assert list(out["agent"].astype(str)) == ["9", "240"]
    assert count_unseen(new, spec)["agent"] == 0


def test_fractional_float_category_encodes_independently_of_the_batch() -> None:
    config = FeaturizeConfig(categorical=["rating"], split=RANDOM)
    spec = fit_feature_spec(pd.DataFrame({"rating": [1.5, 2.0, 2.0]}), config)
    out = build_features(pd.DataFrame({"rating": [2.0]}), spec)
    assert out["rating"].notna().all()


def test_encode_categories_directly() -> None:
    encoded = encode_categories(pd.Series([1.0, 2.0, 3.0, np.nan]), ["1", "2"])
    assert isinstance(encoded, pd.Categorical)
    assert list(encoded.categories) == ["1", "2"]
    assert list(encoded.codes) == [0, 1, -1, -1]


@pytest.mark.parametrize(
    "values",
    [
        pd.Series([1.0, 2.0, 3.0, np.nan, 2.0]),
        pd.Series(["a", None, "zzz", "b", "a"], dtype="str"),
        pd.Series([9, "9", None, "b", 9.5], dtype=object),
    ],
)
def test_encode_categories_gives_each_row_its_position_in_the_list(values: pd.Series) -> None:
    long = pd.concat([values] * 400, ignore_index=True)  # long enough to factorize the text
    categories = ["9", "b", "2", "a", "1"]
    encoded = encode_categories(long, categories)
    text = canonical_text(long)
    expected = [categories.index(t) if t in categories else -1 for t in text.fillna("~")]
    assert list(encoded.codes) == expected
    assert list(encoded.categories) == categories


def test_count_unseen_counts_present_unknown_values_only(spec: FeatureSpec) -> None:
    new = pd.DataFrame(
        {
            "n": [1.0] * 5,
            "k": [1] * 5,
            "c": ["zzz", "zzz", "a", None, "yyy"],
            "agent": [9.0, 1.0, np.nan, 240.0, 240.0],
        }
    )
    assert count_unseen(new, spec) == {"c": 3, "agent": 1}
    assert count_unseen(TRAIN, spec) == {"c": 0, "agent": 0}


def test_count_unseen_counts_rare_categories_left_out_at_fit() -> None:
    config = CONFIG.model_copy(update={"min_category_count": 2})
    spec = fit_feature_spec(TRAIN, config)
    assert count_unseen(TRAIN, spec) == {"c": 1, "agent": 0}


def test_json_round_trip(spec: FeatureSpec) -> None:
    text = spec.to_json()
    payload = json.loads(text)
    assert payload == {
        "categories": {"agent": ["240", "9"], "c": ["a", "b", "rare"]},
        "derived": {"ratio": "n / k"},
        "numeric": ["n"],
        "order": ["n", "c", "agent", "ratio"],
        "version": SPEC_VERSION,
        "history": {},
    }
    again = FeatureSpec.from_json(text)
    assert again == spec
    assert again.order == spec.order  # the column order survives (categories are sorted keys)
    assert build_features(TRAIN, again).equals(build_features(TRAIN, spec))


@pytest.mark.parametrize("version", [0, 2, 99, None, "1"])
def test_wrong_spec_version_is_refused(spec: FeatureSpec, version: object) -> None:
    payload = json.loads(spec.to_json())
    payload["version"] = version
    with pytest.raises(FeatureError, match=f"feature spec version {version} is not supported"):
        FeatureSpec.from_json(json.dumps(payload))


def test_spec_without_version_is_refused(spec: FeatureSpec) -> None:
    payload = json.loads(spec.to_json())
    del payload["version"]
    with pytest.raises(FeatureError, match="version None is not supported"):
        FeatureSpec.from_json(json.dumps(payload))


@pytest.mark.parametrize("column", ["n", "c", "agent"])
def test_missing_required_column_is_named(spec: FeatureSpec, column: str) -> None:
    with pytest.raises(FeatureError, match=rf"lack required feature columns: \['{column}'\]"):
        build_features(TRAIN.drop(columns=[column]), spec)


def test_all_missing_columns_are_listed(spec: FeatureSpec) -> None:
    with pytest.raises(FeatureError, match=r"\['agent', 'c', 'n'\]"):
        build_features(TRAIN[["k"]], spec)


def test_missing_derived_input_is_a_feature_error(spec: FeatureSpec) -> None:
    assert "k" in spec.required_columns
    with pytest.raises(FeatureError, match=r"\['k'\]"):
        build_features(TRAIN.drop(columns=["k"]), spec)


def test_a_spec_written_before_history_features_still_loads(spec: FeatureSpec) -> None:
    payload = json.loads(spec.to_json())
    del payload["history"]
    assert FeatureSpec.from_json(json.dumps(payload)) == spec


def test_history_features_are_inputs_by_their_keys() -> None:
    config = CONFIG.model_copy(
        update={"history": CONFIG.history.model_copy(update={"columns": ["agent"]})}
    )
    frame = TRAIN.assign(hist_rate_agent=0.3, hist_n_agent=4.0)
    spec = fit_feature_spec(frame, config)
    assert spec.history == {"keys": ["agent"], "window_days": 365, "prior": 20}
    assert spec.order[-2:] == ["hist_rate_agent", "hist_n_agent"]
    assert {"hist_rate_agent", "hist_n_agent"} <= spec.required_columns
    assert not {"hist_rate_agent", "hist_n_agent"} & spec.input_columns
    assert "agent" in spec.input_columns
    assert build_features(frame, spec)["hist_n_agent"].eq(4.0).all()
    with pytest.raises(FeatureError, match="hist_n_agent"):
        build_features(TRAIN, spec)
