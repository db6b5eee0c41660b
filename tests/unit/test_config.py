"""keel.config: the shipped params.yaml, and every way a params file can be wrong."""

from __future__ import annotations

import copy
import datetime as dt
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from keel.config import (
    ConfigError,
    DataConfig,
    EntityKeyConfig,
    FeaturizeConfig,
    GateConfig,
    Params,
    SplitConfig,
    TrainConfig,
    load_params,
)

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
_BASE: dict[str, Any] = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))


def base() -> dict[str, Any]:
    """A fresh, editable copy of the shipped params."""
    return copy.deepcopy(_BASE)


def write(tmp_path: Path, params: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def refused(tmp_path: Path, params: dict[str, Any]) -> str:
    """Load a params variant that must be refused; return the error message."""
    path = write(tmp_path, params)
    with pytest.raises(ConfigError) as info:
        load_params(path)
    message = str(info.value)
    assert str(path) in message  # every error names the file
    return message


# --- the shipped file ------------------------------------------------------------------------


def test_shipped_params_parse() -> None:
    params = load_params(PARAMS)
    assert isinstance(params, Params)
    assert params.data.task == "binary"
    assert params.data.target == "is_canceled"
    assert params.data.entity_key == EntityKeyConfig(method="content_hash", name="booking_id")
    assert params.data.order_time == "arrival_date"  # split_time wins over event_time
    assert params.data.label_time == "outcome_date"
    assert "reservation_status" in params.featurize.exclude
    assert params.featurize.split.method == "time"
    assert params.featurize.split.validation_start == dt.date(2016, 5, 1)
    assert params.featurize.split.cutoff == dt.date(2016, 7, 1)
    assert params.featurize.split.holdout_end == dt.date(2016, 8, 31)
    assert params.train.recency_half_life_days == 180
    assert params.validate_.suite == "expectations/hotel_bookings.json"
    assert params.gate.primary_metric == "roc_auc"


def test_feature_names_keep_the_listed_order() -> None:
    params = load_params(PARAMS)
    feat = params.featurize
    assert feat.feature_names == [
        *_BASE["featurize"]["numeric"],
        *_BASE["featurize"]["categorical"],
        *(
            f"hist_{k}_{key}"
            for key in _BASE["featurize"]["history"]["columns"]
            for k in ("rate", "n")
        ),
    ]
    assert not set(feat.feature_names) & set(feat.exclude)


def test_models_are_frozen() -> None:
    params = load_params(PARAMS)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        params.train.seed = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        params.data = params.data  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        params.featurize.split.cutoff = dt.date(2020, 1, 1)  # type: ignore[misc]
    assert params.train.seed == 42


def test_sections_with_defaults_may_be_left_out(tmp_path: Path) -> None:
    params = base()
    for section in ("evaluate", "gate", "score", "monitor", "retrain", "serve"):
        del params[section]
    loaded = load_params(write(tmp_path, params))
    assert loaded.evaluate.threshold == 0.5
    assert loaded.gate.model_name == "model"


# --- unreadable files ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"params file not found: {path}")):
        load_params(path)


@pytest.mark.parametrize(
    "text",
    ["data: [unclosed\n", "data:\n  task: binary\n task: x\n", "a: b: c\n", "\tdata: 1\n"],
)
def test_malformed_yaml_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{path} is not valid YAML")):
        load_params(path)


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"data:\n  target: \xff\xfe\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_params(path)


@pytest.mark.parametrize("text, kind", [("- a list\n", "list"), ("", "NoneType"), ("7\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"must hold a mapping of stage sections, got {kind}"):
        load_params(path)


# --- unknown keys and bad values -------------------------------------------------------------


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree[part]
    tree[leaf] = value


@pytest.mark.parametrize(
    "dotted",
    [
        "surprise",
        "train.lerning_rate",
        "featurize.split.cutof",
        "data.entity_key.colum",
        "validate.bogus",
        "monitor.window",
    ],
)
def test_unknown_keys_are_named(tmp_path: Path, dotted: str) -> None:
    params = base()
    _set(params, dotted, 1)
    message = refused(tmp_path, params)
    assert f"{dotted}: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    "dotted, value, words",
    [
        ("data.task", "multiclass", "data.task"),
        ("train.device", "tpu", "train.device"),
        ("train.num_boost_round", 0, "train.num_boost_round"),
        ("evaluate.threshold", 1.5, "evaluate.threshold"),
        ("gate.primary_metric", "f1", "unknown metric 'f1'"),
        ("gate.model_name", "bad name!", "gate.model_name"),
        ("data.entity_key", {"method": "column"}, "needs entity_key.column"),
        ("featurize.split.validation_start", "2016-08-01", "validation_start < cutoff"),
        ("featurize.split.cutoff", "not a date", "featurize.split.cutoff"),
        ("featurize.derived", {"x": "lead_time +"}, "cannot parse expression 'lead_time +'"),
        ("replay.reason_method", "exact", "replay.reason_method: Input should be 'shap' or"),
    ],
)
def test_bad_values_are_refused_with_the_key(
    tmp_path: Path, dotted: str, value: Any, words: str
) -> None:
    params = base()
    _set(params, dotted, value)
    assert words in refused(tmp_path, params)


def test_missing_required_section(tmp_path: Path) -> None:
    params = base()
    del params["ingest"]
    assert "ingest: Field required" in refused(tmp_path, params)


# --- leakage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["numeric", "categorical"])
@pytest.mark.parametrize(
    "column", ["reservation_status", "booking_changes", "assigned_room_type", "is_canceled"]
)
def test_leaking_column_as_feature_is_refused(tmp_path: Path, section: str, column: str) -> None:
    params = base()
    params["featurize"][section].append(column)
    message = refused(tmp_path, params)
    assert f"features ['{column}'] are the target or listed in featurize.exclude" in message


@pytest.mark.parametrize(
    "expr, bad",
    [
        ("days_in_waiting_list * 2", "days_in_waiting_list"),
        ("is_canceled + 1", "is_canceled"),
        ("lead_time / (booking_changes + 1)", "booking_changes"),
        ("year(to_date(reservation_status_date))", "reservation_status_date"),
    ],
)
def test_derived_feature_reading_a_leaking_column_is_refused(
    tmp_path: Path, expr: str, bad: str
) -> None:
    params = base()
    params["featurize"]["derived"] = {"sneaky": expr}
    message = refused(tmp_path, params)
    assert f"derived feature 'sneaky' = '{expr}' reads ['{bad}'], which leak the label" in message


def test_derived_feature_leaking_through_a_data_derived_column(tmp_path: Path) -> None:
    params = base()
    # outcome_date = to_date(reservation_status_date): an excluded column, one step removed.
    params["featurize"]["derived"] = {"stay_to_outcome": "outcome_date - booking_date"}
    message = refused(tmp_path, params)
    assert "derived feature 'stay_to_outcome'" in message
    assert "reads ['reservation_status_date']" in message


def test_harmless_derived_feature_is_accepted(tmp_path: Path) -> None:
    params = base()
    params["featurize"]["derived"] = {"nights": "stays_in_weekend_nights + stays_in_week_nights"}
    loaded = load_params(write(tmp_path, params))
    names = loaded.featurize.feature_names
    assert names[names.index("nights") :] == ["nights", *loaded.featurize.history_names]
    assert loaded.featurize.derived == {"nights": "stays_in_weekend_nights + stays_in_week_nights"}


def test_leak_through_a_chain_of_data_derived_columns(tmp_path: Path) -> None:
    params = base()
    params["data"]["derived"]["outcome_next_day"] = "outcome_date + days(1)"
    params["featurize"]["derived"] = {"x": "outcome_next_day - booking_date"}
    assert "reservation_status_date" in refused(tmp_path, params)


def test_numeric_feature_naming_a_leaking_data_derived_column(tmp_path: Path) -> None:
    params = base()
    params["data"]["derived"]["waited"] = "days_in_waiting_list * 1"
    params["featurize"]["numeric"].append("waited")
    assert "days_in_waiting_list" in refused(tmp_path, params)


def test_time_columns_cannot_be_raw_features(tmp_path: Path) -> None:
    params = base()
    params["featurize"]["numeric"].append("booking_date")
    assert "time columns ['booking_date'] cannot be raw features" in refused(tmp_path, params)


def test_feature_listed_twice(tmp_path: Path) -> None:
    params = base()
    params["featurize"]["categorical"].append("lead_time")
    assert "features listed twice: ['lead_time']" in refused(tmp_path, params)


# --- split policy ----------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["cutoff", "holdout_end", "validation_start"])
def test_time_split_without_dates(tmp_path: Path, missing: str) -> None:
    params = base()
    del params["featurize"]["split"][missing]
    message = refused(tmp_path, params)
    assert "split.method 'time' needs cutoff, holdout_end and validation_start" in message


@pytest.mark.parametrize(
    "dates",
    [
        {"validation_start": "2016-07-01"},  # == cutoff
        {"cutoff": "2016-09-01"},  # after holdout_end
    ],
)
def test_time_split_dates_must_be_ordered(tmp_path: Path, dates: dict[str, str]) -> None:
    params = base()
    params["featurize"]["split"].update(dates)
    assert "validation_start < cutoff <= holdout_end" in refused(tmp_path, params)


def test_time_split_needs_label_time(tmp_path: Path) -> None:
    params = base()
    del params["data"]["label_time"]
    params["featurize"]["history"]["columns"] = []  # history needs label_time as well
    message = refused(tmp_path, params)
    assert "a time split needs data.event_time (or split_time) and label_time" in message


def test_recency_half_life_with_random_split(tmp_path: Path) -> None:
    params = base()
    params["featurize"]["split"] = {"method": "random", "seed": 1}
    message = refused(tmp_path, params)
    assert "train.recency_half_life_days needs a time split" in message
    params["train"]["recency_half_life_days"] = None
    loaded = load_params(write(tmp_path, params))
    assert loaded.featurize.split.method == "random"
    assert loaded.featurize.split.holdout_fraction == 0.2


# --- models built in code --------------------------------------------------------------------


def test_split_config_in_code() -> None:
    with pytest.raises(pydantic.ValidationError, match="needs cutoff"):
        SplitConfig(method="time")
    with pytest.raises(pydantic.ValidationError, match="holdout_fraction"):
        SplitConfig(method="random", holdout_fraction=1.0)


def test_order_time_defaults_to_event_time() -> None:
    data = DataConfig(task="binary", target="y", event_time="made")
    assert data.order_time == "made"
    assert DataConfig(task="binary", target="y").order_time is None


def test_small_models_forbid_extra_keys_and_are_frozen() -> None:
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        TrainConfig(seeed=1)  # type: ignore[call-arg]
    feat = FeaturizeConfig(numeric=["a"], split=SplitConfig(method="random"))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        feat.numeric = ["b"]  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="unknown metric 'auc'"):
        GateConfig(calibration_metric="auc")


@pytest.mark.parametrize("key", ["is_canceled", "reservation_status"])
def test_history_keys_cannot_be_the_label_or_a_leak(key: str) -> None:
    raw = copy.deepcopy(_BASE)
    raw["featurize"]["history"]["columns"] = [key]
    with pytest.raises(ValueError, match="history keys"):
        Params.model_validate(raw)


def test_history_needs_event_and_label_time() -> None:
    raw = copy.deepcopy(_BASE)
    raw["data"]["label_time"] = None
    raw["featurize"]["split"] = {"method": "random"}
    raw["train"]["recency_half_life_days"] = None
    with pytest.raises(ValueError, match="history needs"):
        Params.model_validate(raw)
