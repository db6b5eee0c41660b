"""keel.expressions: the safe expression language for derived columns."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from keel.expressions import FUNCTIONS, ExpressionError, evaluate, referenced_columns

FRAME = pd.DataFrame(
    {
        "y": [2016, 2017, 2016],
        "m": ["July", "february", " DECEMBER "],
        "mn": [7, 2, 12],
        "d": [1, 28, 31],
        "lead": [10, 0, 365],
        "iso": ["2016-07-03", "not a date", "2016-12-31T18:30:00"],
        "a": [1.0, 4.0, -3.0],
        "b": [0.0, 2.0, 0.0],
        "i": [0, 6, 0],
        "j": [0, 3, 1],
    },
    index=[10, 20, 30],
)


def ts(*values: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(v) for v in values]


# --- dates -----------------------------------------------------------------------------------


def test_date_from_english_month_names_any_case_and_spacing() -> None:
    out = evaluate("date(y, m, d)", FRAME)
    assert list(out) == ts("2016-07-01", "2017-02-28", "2016-12-31")
    assert list(out.index) == [10, 20, 30]


def test_date_from_month_numbers_equals_date_from_names() -> None:
    assert evaluate("date(y, mn, d)", FRAME).equals(evaluate("date(y, m, d)", FRAME))


# The Pandas4Warning is the bug xfailed in test_month_text_with_unmapped_values_warns_nothing.
@pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")
def test_date_accepts_numeric_month_text_and_float_parts() -> None:
    frame = pd.DataFrame({"y": [2016.0, 2016.0], "m": ["7", "march"], "d": [4.0, 1.0]})
    assert list(evaluate("date(y, m, d)", frame)) == ts("2016-07-04", "2016-03-01")


@pytest.mark.parametrize(
    "y, m, d",
    [
        (2017, "February", 29),  # not a leap year
        (2016, "Smarch", 1),  # not a month
        (2016, "13", 1),  # month out of range
        (None, "July", 1),  # missing year
    ],
)
@pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")
def test_invalid_date_parts_give_nat_not_an_error(y: object, m: str, d: int) -> None:
    frame = pd.DataFrame({"y": [y, 2016], "m": [m, "July"], "d": [d, 1]})
    out = evaluate("date(y, m, d)", frame)
    assert pd.isna(out.iloc[0])
    assert out.iloc[1] == pd.Timestamp("2016-07-01")


def test_month_text_with_unmapped_values_warns_nothing() -> None:
    frame = pd.DataFrame({"m": ["July", "7"]})
    assert list(evaluate("month_number(m)", frame)) == [7.0, 7.0]


def test_leap_day_is_a_valid_date() -> None:
    frame = pd.DataFrame({"y": [2016], "m": ["February"], "d": [29]})
    assert list(evaluate("date(y, m, d)", frame)) == ts("2016-02-29")


def test_days_and_date_arithmetic() -> None:
    booked = evaluate("date(y, m, d) - days(lead)", FRAME)
    assert list(booked) == ts("2016-06-21", "2017-02-28", "2016-01-01")
    later = evaluate("date(y, mn, d) + days(1)", FRAME)
    assert list(later) == ts("2016-07-02", "2017-03-01", "2017-01-01")
    assert list(evaluate("days(lead)", FRAME)) == [
        pd.Timedelta(days=10),
        pd.Timedelta(0),
        pd.Timedelta(days=365),
    ]


def test_difference_of_dates_is_a_timedelta() -> None:
    gap = evaluate("to_date(iso) - date(y, m, d)", FRAME)
    assert gap.iloc[0] == pd.Timedelta(days=2)
    assert pd.isna(gap.iloc[1])  # unparsable date propagates as missing
    assert gap.iloc[2] == pd.Timedelta(hours=18, minutes=30)


def test_to_date_parses_iso_strings_and_coerces_garbage() -> None:
    out = evaluate("to_date(iso)", FRAME)
    assert out.iloc[0] == pd.Timestamp("2016-07-03")
    assert pd.isna(out.iloc[1])
    assert out.iloc[2] == pd.Timestamp("2016-12-31 18:30")
    assert out.dt.tz is None


def test_to_date_missing_values_are_nat() -> None:
    frame = pd.DataFrame({"s": ["2016-01-02", None]})
    out = evaluate("to_date(s)", frame)
    assert out.iloc[0] == pd.Timestamp("2016-01-02") and pd.isna(out.iloc[1])


def test_to_date_drops_a_uniform_timezone() -> None:
    frame = pd.DataFrame({"s": ["2016-07-03T10:00:00+02:00", "2016-07-04T10:00:00+02:00"]})
    out = evaluate("to_date(s)", frame)
    assert out.dt.tz is None
    assert out.iloc[0].day == 3 and out.iloc[1].day == 4


def test_to_date_mixed_offsets_parse_or_fail_cleanly() -> None:
    frame = pd.DataFrame({"s": ["2016-03-26T10:00:00+01:00", "2016-03-28T10:00:00+02:00"]})
    try:
        out = evaluate("to_date(s)", frame)
    except ExpressionError:
        return
    assert out.notna().all()


def test_to_date_of_a_constant() -> None:
    out = evaluate("to_date('2016-07-03')", FRAME)
    assert list(out) == ts("2016-07-03", "2016-07-03", "2016-07-03")


@pytest.mark.parametrize(
    "func, expected",
    [
        ("year", [2016.0, 2017.0, 2016.0]),
        ("month", [7.0, 2.0, 12.0]),
        ("day_of_week", [4.0, 1.0, 5.0]),  # Fri, Tue, Sat (Monday = 0)
        ("day_of_year", [183.0, 59.0, 366.0]),
        ("week_of_year", [26.0, 9.0, 52.0]),
    ],
)
def test_calendar_functions(func: str, expected: list[float]) -> None:
    out = evaluate(f"{func}(date(y, m, d))", FRAME)
    assert out.dtype == "float64"
    assert list(out) == expected


def test_month_number() -> None:
    assert list(evaluate("month_number(m)", FRAME)) == [7.0, 2.0, 12.0]
    assert list(evaluate("month_number(mn)", FRAME)) == [7.0, 2.0, 12.0]


# --- arithmetic ------------------------------------------------------------------------------


def test_arithmetic_precedence_and_unary_minus() -> None:
    assert list(evaluate("-a + 2 * b", FRAME)) == [-1.0, 0.0, 3.0]
    assert list(evaluate("(a + 1) * 3", FRAME)) == [6.0, 15.0, -6.0]
    assert list(evaluate("a - -a", FRAME)) == [2.0, 8.0, -6.0]
    assert list(evaluate("a / 2", FRAME)) == [0.5, 2.0, -1.5]


def test_division_by_zero_is_nan_never_inf() -> None:
    ratio = evaluate("a / b", FRAME)  # 1/0, 4/2, -3/0
    assert np.isnan(ratio.iloc[0]) and ratio.iloc[1] == 2.0 and np.isnan(ratio.iloc[2])
    assert not np.isinf(ratio).any()
    ints = evaluate("i / j", FRAME)  # 0/0, 6/3, 0/1
    assert np.isnan(ints.iloc[0]) and list(ints.iloc[1:]) == [2.0, 0.0]
    by_zero = evaluate("a / 0", FRAME)
    assert by_zero.isna().all()


def test_constant_division_by_zero_is_nan() -> None:
    assert evaluate("a * (1 / 0)", FRAME).isna().all()


def test_constant_expression_is_broadcast_to_the_frame() -> None:
    out = evaluate("3", FRAME)
    assert list(out) == [3, 3, 3] and list(out.index) == [10, 20, 30]
    assert list(evaluate("1 + 2 * 3", FRAME)) == [7, 7, 7]


# --- referenced columns ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, columns",
    [
        ("date(y, m, d) - days(lead)", {"y", "m", "d", "lead"}),
        ("a", {"a"}),
        ("3 + 4", set()),
        ("to_date(reservation_status_date)", {"reservation_status_date"}),
        ("year(to_date(x)) - year(date(y, 'July', 1))", {"x", "y"}),
        ("x.__class__", {"x"}),
    ],
)
def test_referenced_columns(expr: str, columns: set[str]) -> None:
    assert referenced_columns(expr) == columns


def test_referenced_columns_keeps_a_column_named_like_a_function() -> None:
    assert referenced_columns("arrival + days(days)") == {"arrival", "days"}


def test_referenced_columns_refuses_bad_syntax() -> None:
    with pytest.raises(ExpressionError, match="cannot parse expression 'a \\+'"):
        referenced_columns("a +")


# --- error paths -----------------------------------------------------------------------------


def test_unknown_function_lists_the_allowed_ones() -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate("nope(a)", FRAME)
    message = str(info.value)
    assert "unknown function 'nope'" in message
    assert "allowed: " + ", ".join(sorted(FUNCTIONS)) in message


def test_missing_column_is_named() -> None:
    with pytest.raises(ExpressionError, match=r"expression 'a \+ missing' reads missing column"):
        evaluate("a + missing", FRAME)
    with pytest.raises(ExpressionError, match="missing column 'zz'"):
        evaluate("date(y, m, zz)", FRAME)


@pytest.mark.parametrize(
    "expr",
    [
        "x.__class__",
        "a.__class__.__bases__",
        "a.sum()",
        "lambda: 1",
        "(lambda: 1)()",
        "a[0]",
        "FRAME['a']",
        "date(y=y, m=m, d=d)",
        "days(lead, unit='D')",
        "a ** 2",
        "a % 2",
        "a // 2",
        "a < b",
        "a if b else a",
        "[a, b]",
        "{'k': a}",
        "None",
        "not a",
        "a and b",
        "f'{a}'",
        "(x := 1)",
        "days(lead)(a)",
    ],
)
def test_disallowed_constructs(expr: str) -> None:
    frame = FRAME.assign(x=1)
    with pytest.raises(ExpressionError, match="uses a construct that is not allowed"):
        evaluate(expr, frame)


@pytest.mark.parametrize(
    "expr, name",
    [
        ("__import__('os')", "__import__"),
        ("__import__('os').system('true')", None),
        ("eval('1')", "eval"),
        ("open('/etc/passwd')", "open"),
        ("exec('x=1')", "exec"),
    ],
)
def test_builtins_are_not_reachable(expr: str, name: str | None) -> None:
    words = f"unknown function '{name}'" if name else "not allowed"
    with pytest.raises(ExpressionError, match=re.escape(words)):
        evaluate(expr, FRAME)


@pytest.mark.parametrize("expr", ["a +", "date(y, m", "1 2", "", "a = 1", "import os"])
def test_syntax_errors(expr: str) -> None:
    with pytest.raises(ExpressionError, match=f"cannot parse expression '{re.escape(expr)}'"):
        evaluate(expr, FRAME)


def test_expression_error_is_a_value_error() -> None:
    assert issubclass(ExpressionError, ValueError)


def test_month_number_of_a_long_column_matches_each_value_alone() -> None:
    values = pd.Series([" July", "august ", "9", None, "Smarch", "12", "DECEMBER"], dtype="str")
    long = pd.DataFrame({"m": pd.concat([values] * 300, ignore_index=True)})
    expected = [7.0, 8.0, 9.0, np.nan, np.nan, 12.0, 12.0] * 300
    out = evaluate("month_number(m)", long)
    assert out.index.equals(long.index)
    np.testing.assert_array_equal(out.to_numpy(), np.array(expected))
    short = evaluate("month_number(m)", pd.DataFrame({"m": values}))
    np.testing.assert_array_equal(short.to_numpy(), np.array(expected[:7]))
