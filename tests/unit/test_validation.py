"""Unit tests of keel.validation with tiny frames and a tiny inline suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from keel.validation import (
    DataValidationError,
    ExpectationFailure,
    ValidationReport,
    gate_report,
    load_suite,
    validate_frame,
)


def _exp(expectation: str, /, **kwargs: Any) -> dict[str, Any]:
    return {"type": expectation, "kwargs": kwargs, "meta": {}}


def _suite(*expectations: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "tiny",
        "expectations": list(expectations)
        or [
            _exp("expect_table_row_count_to_be_between", min_value=1),
            _exp("expect_column_values_to_be_of_type", column="b", type_="str"),
            _exp("expect_column_values_to_not_be_null", column="a"),
            _exp("expect_column_values_to_be_in_set", column="b", value_set=["x", "y"]),
            _exp("expect_column_values_to_be_between", column="c", min_value=0, max_value=10),
        ],
    }


def _good() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "x"], "c": [0.5, 1.0, 9.5]})


def _bad() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": [1.0, np.nan, 3.0, 4.0],
            "b": ["x", "zebra", "y", "x"],
            "c": [0.5, np.inf, -3.0, 1.0],
        }
    )


def test_good_frame_passes() -> None:
    report = validate_frame(_good(), _suite())
    assert report.success
    assert report.evaluated == 5
    assert report.failures == []
    assert report.row_count == 3
    assert report.message().startswith("Data validation passed: all 5 expectations")
    gate_report(report)  # does not raise


def test_bad_frame_message_names_each_failure() -> None:
    report = validate_frame(_bad(), _suite())
    assert not report.success
    message = report.message()
    assert message.startswith("Data validation failed: 3 of 5 expectations failed")
    lines = message.splitlines()
    assert "expect_column_values_to_not_be_null on column 'a'" in lines[1]
    assert "expect_column_values_to_be_in_set on column 'b'" in lines[2]
    assert "'zebra'" in lines[2]
    assert "expect_column_values_to_be_between on column 'c'" in lines[3]
    assert "inf" in lines[3] and "-3.0" in lines[3]


def test_failures_are_condensed() -> None:
    report = validate_frame(_bad(), _suite())
    assert report.failures == [
        ExpectationFailure(
            expectation="expect_column_values_to_not_be_null",
            column="a",
            summary="1 of 4 values (25.00%) null",
            examples=["nan"],
        ),
        ExpectationFailure(
            expectation="expect_column_values_to_be_in_set",
            column="b",
            summary="1 of 4 values (25.00%) not in the allowed set",
            examples=["'zebra'"],
        ),
        ExpectationFailure(
            expectation="expect_column_values_to_be_between",
            column="c",
            summary="2 of 4 values (50.00%) outside [0, 10]",
            examples=["inf", "-3.0"],
        ),
    ]


def test_to_json_is_strict_json_with_per_expectation_results() -> None:
    report = validate_frame(_bad(), _suite())
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["success"] is False
    assert data["evaluated"] == 5
    assert data["failed"] == 3
    assert data["row_count"] == 4
    assert [f["column"] for f in data["failures"]] == ["a", "b", "c"]
    assert len(data["results"]) == 5
    for result in data["results"]:
        assert {"type", "column", "success", "result"} <= set(result)
    by_type = {r["type"]: r for r in data["results"]}
    assert by_type["expect_column_values_to_be_of_type"]["result"]["observed_value"] == "str"
    between = by_type["expect_column_values_to_be_between"]
    assert between["success"] is False
    assert "inf" in between["result"]["partial_unexpected_list"]


def test_max_examples_limits_examples() -> None:
    df = pd.DataFrame({"b": ["p", "q", "r", "s", "t", "x"]})
    suite = _suite(_exp("expect_column_values_to_be_in_set", column="b", value_set=["x"]))
    (failure,) = validate_frame(df, suite, max_examples=2).failures
    assert failure.examples == ["'p'", "'q'"]
    assert failure.summary.startswith("5 of 6 values")
    (failure,) = validate_frame(df, suite, max_examples=0).failures
    assert failure.examples == []
    with pytest.raises(ValueError, match="max_examples"):
        validate_frame(df, suite, max_examples=-1)


def test_mostly_tolerates_a_few_bad_values() -> None:
    df = pd.DataFrame({"a": [1.0] * 99 + [np.nan]})
    suite = _suite(_exp("expect_column_values_to_not_be_null", column="a", mostly=0.95))
    assert validate_frame(df, suite).success
    df.loc[:9, "a"] = np.nan  # 10 more, 11 in all
    (failure,) = validate_frame(df, suite).failures
    assert failure.summary == "11 of 100 values (11.00%) null (at most 5.00% allowed)"


def test_empty_frame_fails_even_without_row_count_check() -> None:
    suite = _suite(_exp("expect_column_values_to_not_be_null", column="a"))
    report = validate_frame(pd.DataFrame({"a": pd.Series([], dtype="float64")}), suite)
    assert not report.success
    assert report.evaluated == 2  # the forced "at least one row" check
    assert [f.summary for f in report.failures] == ["table has no rows"]
    assert validate_frame(pd.DataFrame({"a": [1.0]}), suite).success


def test_missing_column_is_a_failure_not_a_crash() -> None:
    report = validate_frame(_good().drop(columns=["c"]), _suite())
    (failure,) = report.failures
    assert failure.expectation == "expect_column_values_to_be_between"
    assert failure.column == "c"
    assert failure.summary == "column 'c' is missing"
    assert "column 'c' is missing" in report.message()
    json.dumps(report.to_json(), allow_nan=False)


def test_wrong_dtype_shows_values() -> None:
    report = validate_frame(_good().assign(b=[1, 2, 3]), _suite())
    dtype = next(f for f in report.failures if f.expectation.endswith("to_be_of_type"))
    assert dtype.summary == "dtype is 'int64', expected 'str'"
    assert dtype.examples == ["1", "2", "3"]


def test_gate_report_raises_with_report() -> None:
    report = validate_frame(_bad(), _suite())
    with pytest.raises(DataValidationError) as caught:
        gate_report(report)
    assert caught.value.report is report
    assert str(caught.value) == report.message()


def test_report_built_by_hand() -> None:
    report = ValidationReport(
        success=False,
        evaluated=2,
        failures=[ExpectationFailure("expect_x", None, "table has no rows", [])],
        row_count=0,
    )
    assert report.message() == (
        "Data validation failed: 1 of 2 expectations failed (0 rows)\n"
        "  - expect_x on table: table has no rows"
    )
    assert report.to_json()["failures"] == [
        {"expectation": "expect_x", "column": None, "summary": "table has no rows", "examples": []}
    ]


def test_unknown_expectation_type_is_an_error() -> None:
    suite = _suite(_exp("expect_nonsense"))
    with pytest.raises(ValueError, match="expect_nonsense"):
        validate_frame(_good(), suite)


def test_load_suite_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(_suite()), encoding="utf-8")
    assert load_suite(path) == _suite()


def test_load_suite_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ValueError, match=r"nope\.json"):
        load_suite(path)


@pytest.mark.parametrize(
    "text",
    ["{not json", "[]", '{"name": "x"}', '{"name": "x", "expectations": [{"kwargs": {}}]}'],
)
def test_load_suite_invalid(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_suite(path)
