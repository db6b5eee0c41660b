"""The hotel_bookings expectation suite against the real file and broken copies of it.

The real file is read and validated once per module; the bad cases use a 2,000-row
slice of it with exactly one defect each, so every test shows that the suite catches
that defect, names the right expectation and column and shows the offending value.
"""

from __future__ import annotations

import json
import time
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

REPO = Path(__file__).parents[2]
RAW = REPO / "data/raw/hotel_bookings.csv.gz"
SUITE = REPO / "expectations/hotel_bookings.json"
SMALL_ROWS = 2_000


def _with_booking_id(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.insert(0, "booking_id", [f"b{i}" for i in range(len(df))])
    return df


@pytest.fixture(scope="module")
def suite() -> dict[str, Any]:
    return load_suite(SUITE)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    if not RAW.exists():
        pytest.fail(f"real data missing: {RAW} (copy /work/shared/data/hotel_bookings.csv.gz)")
    return _with_booking_id(pd.read_csv(RAW))


@pytest.fixture(scope="module")
def real_report(raw: pd.DataFrame, suite: dict[str, Any]) -> tuple[ValidationReport, float]:
    started = time.perf_counter()
    report = validate_frame(raw, suite)
    return report, time.perf_counter() - started


@pytest.fixture
def small(raw: pd.DataFrame) -> pd.DataFrame:
    return raw.head(SMALL_ROWS).copy()


def _failure(report: ValidationReport, expectation: str, column: str | None) -> ExpectationFailure:
    assert not report.success, "expected the validation to fail"
    for failure in report.failures:
        if failure.expectation == expectation and failure.column == column:
            return failure
    pytest.fail(f"no failure of {expectation} on {column!r}; got:\n{report.message()}")


# ----------------------------------------------------------------------------- good data


def test_real_file_passes(
    real_report: tuple[ValidationReport, float], suite: dict[str, Any], raw: pd.DataFrame
) -> None:
    report, seconds = real_report
    assert report.success, report.message()
    assert report.failures == []
    assert report.row_count == len(raw) == 119_390
    assert report.evaluated == len(suite["expectations"])
    assert seconds < 30, f"validating the real file took {seconds:.1f} s"


def test_real_file_report_is_json(real_report: tuple[ValidationReport, float]) -> None:
    report, _ = real_report
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["success"] is True
    assert data["suite_name"] == "hotel_bookings"
    assert len(data["results"]) == report.evaluated
    assert all(r["success"] for r in data["results"])


def test_small_slice_passes(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    # The bad cases below break this slice in exactly one way each.
    report = validate_frame(small, suite)
    assert report.success, report.message()
    gate_report(report)


def test_suite_covers_every_column(raw: pd.DataFrame, suite: dict[str, Any]) -> None:
    by_type: dict[str, set[str]] = {}
    for exp in suite["expectations"]:
        by_type.setdefault(exp["type"], set()).add(exp["kwargs"].get("column"))
    columns = set(raw.columns)
    assert by_type["expect_column_values_to_be_of_type"] == columns
    nullable = {"children", "country", "agent"}
    assert by_type["expect_column_values_to_not_be_null"] == columns - {"company"}
    for exp in suite["expectations"]:
        if exp["type"] == "expect_column_values_to_not_be_null":
            is_nullable = exp["kwargs"]["column"] in nullable
            assert ("mostly" in exp["kwargs"]) == is_nullable, exp
        if "mostly" in exp["kwargs"]:
            assert exp["meta"].get("notes"), f"tolerance without a reason: {exp}"
    (match_set,) = [
        e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_set"
    ]
    assert set(match_set["kwargs"]["column_set"]) == columns
    assert match_set["kwargs"]["exact_match"] is True


# ------------------------------------------------------------------------------ bad data


def test_missing_column_fails(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    report = validate_frame(small.drop(columns=["meal"]), suite)
    schema = _failure(report, "expect_table_columns_to_match_set", None)
    assert "meal" in schema.summary
    assert "'meal'" in schema.examples
    in_set = _failure(report, "expect_column_values_to_be_in_set", "meal")
    assert in_set.summary == "column 'meal' is missing"
    with pytest.raises(DataValidationError, match="meal"):
        gate_report(report)


def test_extra_column_fails(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    report = validate_frame(small.assign(extra=1), suite)
    schema = _failure(report, "expect_table_columns_to_match_set", None)
    assert "unexpected columns ['extra']" in schema.summary


def test_numbers_as_text_fail(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    bad = small.assign(lead_time=small["lead_time"].astype(str))
    report = validate_frame(bad, suite)
    dtype = _failure(report, "expect_column_values_to_be_of_type", "lead_time")
    assert "'str'" in dtype.summary and "'int64'" in dtype.summary
    assert f"'{small['lead_time'].iloc[0]}'" in dtype.examples
    # The range check cannot compare text with numbers: reported, not raised.
    _failure(report, "expect_column_values_to_be_between", "lead_time")


def test_empty_frame_fails(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    report = validate_frame(small.iloc[0:0], suite)
    failure = _failure(report, "expect_table_row_count_to_be_between", None)
    assert failure.summary == "table has no rows"
    assert report.row_count == 0
    assert len(report.failures) == 1, report.message()


def test_target_outside_0_1_fails(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    small.loc[small.index[10], "is_canceled"] = 2
    report = validate_frame(small, suite)
    failure = _failure(report, "expect_column_values_to_be_in_set", "is_canceled")
    assert failure.examples == ["2"]
    assert failure.summary.startswith(f"1 of {SMALL_ROWS} values")
    assert len(report.failures) == 1, report.message()


def test_unknown_category_fails(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    small.loc[small.index[3], "hotel"] = "Motel"
    report = validate_frame(small, suite)
    failure = _failure(report, "expect_column_values_to_be_in_set", "hotel")
    assert "'Motel'" in failure.examples
    assert "not in the allowed set" in failure.summary
    assert "'Motel'" in report.message()


def test_new_country_code_passes_but_bad_format_fails(
    small: pd.DataFrame, suite: dict[str, Any]
) -> None:
    small.loc[small.index[0], "country"] = "XYZ"  # an unseen but well-formed code
    assert validate_frame(small, suite).success
    small.loc[small.index[1], "country"] = "portugal"
    report = validate_frame(small, suite)
    failure = _failure(report, "expect_column_values_to_match_regex", "country")
    assert "'portugal'" in failure.examples


def test_nan_in_non_nullable_numeric_fails(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    bad = small.astype({"adr": "float64"})
    bad.loc[bad.index[7], "adr"] = np.nan
    report = validate_frame(bad, suite)
    failure = _failure(report, "expect_column_values_to_not_be_null", "adr")
    assert failure.examples == ["nan"]
    assert len(report.failures) == 1, report.message()


def test_nan_in_integer_column_fails(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    small["adults"] = small["adults"].astype("float64")
    small.loc[small.index[7], "adults"] = np.nan
    report = validate_frame(small, suite)
    _failure(report, "expect_column_values_to_not_be_null", "adults")
    dtype = _failure(report, "expect_column_values_to_be_of_type", "adults")
    assert "'float64'" in dtype.summary


def test_inf_in_numeric_fails(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    small.loc[small.index[5], "adr"] = np.inf
    report = validate_frame(small, suite)
    failure = _failure(report, "expect_column_values_to_be_between", "adr")
    assert "inf" in failure.examples
    json.dumps(report.to_json(), allow_nan=False)  # inf is made JSON-safe


def test_duplicated_booking_id_fails(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    small.loc[small.index[5], "booking_id"] = "b1"
    report = validate_frame(small, suite)
    failure = _failure(report, "expect_column_values_to_be_unique", "booking_id")
    assert failure.examples == ["'b1'"]
    assert len(report.failures) == 1, report.message()


def test_several_defects_are_all_named(small: pd.DataFrame, suite: dict[str, Any]) -> None:
    small.loc[small.index[3], "hotel"] = "Motel"
    small.loc[small.index[4], "is_canceled"] = 7
    small.loc[small.index[5], "adr"] = -np.inf
    report = validate_frame(small.drop(columns=["deposit_type"]), suite)
    message = report.message()
    assert message.startswith(f"Data validation failed: {len(report.failures)} of ")
    for needle in ("'hotel'", "'Motel'", "'is_canceled'", "7", "'adr'", "-inf", "deposit_type"):
        assert needle in message


# ----------------------------------------------------------------------------- data docs


def test_data_docs_site_is_written(
    small: pd.DataFrame,
    suite: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    docs = tmp_path / "docs"
    small.loc[small.index[3], "hotel"] = "Motel"

    report = validate_frame(small, suite, data_docs_dir=docs)

    index = docs / "index.html"
    assert report.data_docs_index == str(index.resolve())
    html = index.read_text(encoding="utf-8")
    assert "hotel_bookings" in html
    pages = list((docs / "validations" / "hotel_bookings").rglob("*.html"))
    assert len(pages) == 1
    page = pages[0].read_text(encoding="utf-8")
    assert "Motel" in page
    assert list(workdir.iterdir()) == [], "GX wrote outside data_docs_dir"
    assert str(index.resolve()) in report.message()
