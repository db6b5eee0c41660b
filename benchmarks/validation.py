"""Validation: Great Expectations (`keel.validation.validate_frame`) against a hand-written,
vectorized check of the same rules, on synthetic bookings (default 1M rows).

    .venv/bin/python benchmarks/validation.py --rows 1000000

The bare check implements each expectation type of `expectations/hotel_bookings.json` in
pandas/numpy with GX's semantics (nulls are left out of value checks, `mostly` is a share of
the non-null values). It must agree with GX, expectation by expectation, on the data and on a
copy broken on purpose, or the benchmark refuses to report a ratio.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import numpy as np
import pandas as pd
from common import REPO, Ratio, paired, read_bookings

from keel.config import EntityKeyConfig
from keel.table import add_entity_key
from keel.validation import load_suite, validate_frame

SUITE = REPO / "expectations/hotel_bookings.json"
TARGET = 10.0


def _share_ok(bad: int, total: int, mostly: float | None) -> bool:
    if total == 0:
        return True
    return bad == 0 if mostly is None else (total - bad) / total >= mostly


def _check(frame: pd.DataFrame, kind: str, kw: dict[str, Any]) -> bool:
    if kind == "expect_table_row_count_to_be_between":
        low, high = kw.get("min_value"), kw.get("max_value")
        return (low is None or len(frame) >= low) and (high is None or len(frame) <= high)
    if kind == "expect_table_columns_to_match_set":
        wanted, have = set(kw["column_set"]), set(frame.columns)
        return have == wanted if kw.get("exact_match", True) else wanted <= have
    column = kw["column"]
    if column not in frame.columns:
        return False
    values = frame[column]
    mostly = kw.get("mostly")
    if kind == "expect_column_values_to_not_be_null":
        return _share_ok(int(values.isna().sum()), len(values), mostly)
    if kind == "expect_column_proportion_of_non_null_values_to_be_between":
        share = float(values.notna().mean()) if len(values) else 0.0
        return kw.get("min_value", 0) <= share <= kw.get("max_value", 1)
    if kind == "expect_column_values_to_be_of_type":
        wanted = kw["type_"]
        if wanted == "str":  # pandas 3 text columns
            return isinstance(values.dtype, pd.StringDtype)
        return str(values.dtype) == wanted
    present = values.dropna()
    if kind == "expect_column_values_to_be_unique":
        return not present.duplicated().any()
    if kind == "expect_column_values_to_be_in_set":
        bad = int((~present.isin(kw["value_set"])).sum())
    elif kind == "expect_column_values_to_be_between":
        numbers = pd.to_numeric(present, errors="coerce").to_numpy(dtype="float64")
        ok = np.ones(len(numbers), dtype=bool)
        if kw.get("min_value") is not None:
            ok &= numbers >= kw["min_value"]
        if kw.get("max_value") is not None:
            ok &= numbers <= kw["max_value"]
        bad = int((~ok).sum())
    elif kind == "expect_column_values_to_match_regex":
        bad = int((~present.astype(str).str.contains(re.compile(kw["regex"]))).sum())
    elif kind == "expect_column_value_lengths_to_be_between":
        lengths = present.astype(str).str.len()
        bad = int(((lengths < kw["min_value"]) | (lengths > kw["max_value"])).sum())
    else:
        raise ValueError(f"the bare check does not know {kind}")
    return _share_ok(bad, len(present), mostly)


def bare_check(frame: pd.DataFrame, suite: dict[str, Any]) -> list[bool]:
    """Each expectation of the suite evaluated with vectorized pandas: success per expectation."""
    return [_check(frame, e["type"], e["kwargs"]) for e in suite["expectations"]]


def _gx_outcomes(frame: pd.DataFrame, suite: dict[str, Any]) -> list[bool]:
    # validate_frame reports in suite order (the suite already has its row-count check).
    results = validate_frame(frame, suite).results
    assert [r["type"] for r in results] == [e["type"] for e in suite["expectations"]]
    return [bool(r["success"]) for r in results]


def keyed_bookings(rows: int) -> pd.DataFrame:
    """Synthetic bookings with their entity key, as the validate stage sees them."""
    return add_entity_key(
        read_bookings(rows), EntityKeyConfig(method="content_hash", name="booking_id")
    )


def run(rows: int, repeats: int) -> Ratio:
    """GX validation time / the vectorized check's time, same rules, same rows."""
    suite = load_suite(SUITE)
    frame = keyed_bookings(rows)
    broken = frame.head(20_000).copy()
    broken.loc[broken.index[:5], "hotel"] = "Motel"
    broken.loc[broken.index[:50], "adr"] = 9_999.0
    for sample in (frame.head(50_000), broken):
        if _gx_outcomes(sample, suite) != bare_check(sample, suite):
            raise SystemExit("the bare check disagrees with GX: no ratio reported")
    times = paired(lambda: validate_frame(frame, suite), lambda: bare_check(frame, suite), repeats)
    return Ratio(
        name="validation: GX / vectorized check",
        ratio=times.time_ratio(),
        target=TARGET,
        kind="max",
        keel=f"{times.keel_s:.2f} s",
        bare=f"{times.bare_s:.2f} s",
        config=f"{rows:,} synthetic rows, {len(suite['expectations'])} expectations",
        details=times.details(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(run(args.rows, args.repeats).line())


if __name__ == "__main__":
    main()
