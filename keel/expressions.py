"""A small, safe expression language for derived columns.

`params.yaml` describes derived columns such as the arrival date of a booking, built from
three columns, as text: `date(arrival_date_year, arrival_date_month, arrival_date_day_of_month)`.
Expressions are parsed with :mod:`ast` and only whitelisted nodes and functions are evaluated,
so a params file can never run arbitrary code.

Grammar: column names, numbers and strings, `+ - * /`, unary minus, parentheses and calls of
the functions in :data:`FUNCTIONS`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from keel.distinct import per_distinct

__all__ = ["FUNCTIONS", "ExpressionError", "evaluate", "referenced_columns"]

_MONTHS = {
    name: number
    for number, name in enumerate(
        [
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ],
        start=1,
    )
}


class ExpressionError(ValueError):
    """An expression is malformed, uses something not allowed, or names a missing column."""


def _month_number(month: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(month):
        return month.astype("float64")
    return per_distinct(month, _month_text_number)  # twelve names in a long column


def _month_text_number(month: pd.Series) -> pd.Series:
    text = month.astype("string").str.strip().str.lower()
    mapped = pd.to_numeric(text.map(_MONTHS), errors="coerce").astype("float64")
    numeric = pd.to_numeric(text, errors="coerce").astype("float64")
    return mapped.where(mapped.notna(), numeric)


def _date(year: pd.Series, month: pd.Series, day: pd.Series) -> pd.Series:
    parts = pd.DataFrame(
        {
            "year": pd.to_numeric(year, errors="coerce"),
            "month": _month_number(month),
            "day": pd.to_numeric(day, errors="coerce"),
        }
    )
    return pd.to_datetime(parts, errors="coerce")


def _to_date(values: pd.Series) -> pd.Series:
    if not isinstance(values, pd.Series):
        return pd.Timestamp(values)
    # utc=True accepts mixed offsets (a DST change); the result is naive UTC, as for plain dates.
    parsed = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
    return parsed.dt.tz_convert(None)


def _days(values: pd.Series) -> pd.Series:
    return pd.to_timedelta(pd.to_numeric(values, errors="coerce"), unit="D")


def _dt(attr: str) -> Callable[[pd.Series], pd.Series]:
    def get(values: pd.Series) -> pd.Series:
        dates = pd.to_datetime(values, errors="coerce")
        if attr == "week_of_year":
            return dates.dt.isocalendar().week.astype("float64")
        return getattr(dates.dt, attr).astype("float64")

    return get


def _safe_div(a: Any, b: Any) -> Any:
    if not isinstance(a, pd.Series) and not isinstance(b, pd.Series) and b == 0:
        return np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        result = a / b
    if isinstance(result, pd.Series):
        return result.replace([np.inf, -np.inf], np.nan)
    return result


FUNCTIONS: Mapping[str, Callable[..., pd.Series]] = {
    "date": _date,
    "to_date": _to_date,
    "days": _days,
    "year": _dt("year"),
    "month": _dt("month"),
    "day_of_week": _dt("day_of_week"),
    "day_of_year": _dt("day_of_year"),
    "week_of_year": _dt("week_of_year"),
    "month_number": _month_number,
}

_BINOPS: Mapping[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: _safe_div,
}


def _parse(expr: str) -> ast.expr:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse expression '{expr}': {exc.msg}") from None
    return tree.body


def referenced_columns(expr: str) -> set[str]:
    """Return the column names an expression reads.

    Args:
        expr: The expression text.

    Returns:
        The names used as values (function names are not columns).
    """
    tree = _parse(expr)
    function_nodes = {
        id(n.func)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in function_nodes}


def evaluate(expr: str, frame: pd.DataFrame) -> pd.Series:
    """Evaluate an expression against a frame's columns.

    Args:
        expr: The expression text, e.g. `arrival_date - days(lead_time)`.
        frame: The columns the expression may read.

    Returns:
        A series aligned with `frame`.

    Raises:
        ExpressionError: The expression is not allowed or names a missing column.
    """

    def ev(node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            if node.id not in frame.columns:
                raise ExpressionError(f"expression '{expr}' reads missing column '{node.id}'")
            return frame[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            func = FUNCTIONS.get(node.func.id)
            if func is None:
                raise ExpressionError(
                    f"expression '{expr}' calls unknown function '{node.func.id}'; "
                    f"allowed: {', '.join(sorted(FUNCTIONS))}"
                )
            return func(*(ev(arg) for arg in node.args))
        raise ExpressionError(
            f"expression '{expr}' uses a construct that is not allowed: {ast.dump(node)[:60]}"
        )

    result = ev(_parse(expr))
    if not isinstance(result, pd.Series):
        return pd.Series(result, index=frame.index)
    return result
