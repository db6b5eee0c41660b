"""Data validation with Great Expectations (GX 1.x), free of any orchestration code.

The suite lives in a JSON file in the format produced by GX's
``ExpectationSuite.to_json_dict()``::

    {"name": "...", "expectations": [{"type": "...", "kwargs": {...}, "meta": {}}]}

:func:`validate_frame` runs it against a pandas DataFrame in an *ephemeral* GX
context (nothing is persisted, no ``gx/`` folder is created) and condenses GX's
verbose result into a :class:`ValidationReport`: one :class:`ExpectationFailure`
per failed expectation with a human sentence and a few offending values.
:func:`gate_report` turns a failed report into a :class:`DataValidationError`.

Two GX behaviours are smoothed over on purpose:

* GX passes every row-level check on an empty table, so a check that the table
  has at least one row is always enforced (added when the suite lacks one).
* GX reports an expectation on a missing column as ``success=False`` with an
  exception buried in the result; this becomes the failure "column 'X' is
  missing" instead of a stack trace.
* ``gx.ExpectationSuite`` only logs, then silently drops, an expectation it cannot
  build (e.g. a misspelt type); here that is a ``ValueError`` instead.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from keel.table import contiguous

logger = logging.getLogger(__name__)

__all__ = [
    "DataValidationError",
    "ExpectationFailure",
    "ValidationReport",
    "gate_report",
    "load_suite",
    "validate_frame",
]

_ROW_COUNT_TYPE = "expect_table_row_count_to_be_between"
_DOCS_SITE_NAME = "keel_data_docs"
_MAX_MESSAGE_FAILURES = 50

# What the unexpected values of a column-map expectation "are", for summaries.
_MAP_PHRASES: dict[str, str] = {
    "expect_column_values_to_be_in_set": "not in the allowed set",
    "expect_column_values_to_not_be_in_set": "in the forbidden set",
    "expect_column_values_to_not_be_null": "null",
    "expect_column_values_to_be_null": "not null",
    "expect_column_values_to_be_unique": "duplicated",
    "expect_column_values_to_be_of_type": "not of the expected type",
    "expect_column_values_to_be_in_type_list": "not of an allowed type",
}


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation, condensed for humans.

    Attributes:
        expectation: GX expectation type, e.g. ``"expect_column_values_to_be_in_set"``.
        column: The column the expectation is about, or ``None`` for table-level ones.
        summary: One human sentence, e.g.
            ``"12 of 119390 values (0.01%) not in the allowed set"``.
        examples: Up to ``max_examples`` offending values, as ``repr``-like strings.
    """

    expectation: str
    column: str | None
    summary: str
    examples: list[str]


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one DataFrame against one suite.

    Attributes:
        success: Whether every expectation succeeded.
        evaluated: Number of expectations evaluated.
        failures: One entry per failed expectation.
        row_count: Number of rows in the validated frame.
        suite_name: Name of the suite that was run.
        results: Per-expectation results (type, column, success, kwargs and GX's
            observed result), already JSON-safe.
        data_docs_index: Path of the GX Data Docs ``index.html`` when Data Docs were
            rendered, else ``None``.
        invalid_rows: With ``row_level=True``: the frame's index label of every row that broke
            a per-row expectation, with the broken expectations in words.
        table_level_failed: With ``row_level=True``: whether an expectation about the table
            as a whole (schema, row count, uniqueness without row labels) failed, so no row
            can be trusted and the batch must be rejected rather than partly quarantined.
    """

    success: bool
    evaluated: int
    failures: list[ExpectationFailure]
    row_count: int
    suite_name: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)
    data_docs_index: str | None = None
    invalid_rows: dict[Any, list[str]] = field(default_factory=dict)
    table_level_failed: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable summary of the report.

        Returns:
            A dict with the overall outcome, the condensed failures and the
            per-expectation results; ``json.dumps(..., allow_nan=False)`` accepts it.
        """
        return {
            "success": self.success,
            "suite_name": self.suite_name,
            "evaluated": self.evaluated,
            "failed": len(self.failures),
            "row_count": self.row_count,
            "failures": [
                {
                    "expectation": f.expectation,
                    "column": f.column,
                    "summary": f.summary,
                    "examples": list(f.examples),
                }
                for f in self.failures
            ],
            "results": _json_safe(self.results),
            "data_docs_index": self.data_docs_index,
        }

    def message(self) -> str:
        """Return a multi-line, human-readable account of the validation.

        Returns:
            For a failed report, text starting with
            ``"Data validation failed: N of M expectations failed"`` and naming each
            failed expectation, its column and a few offending values. For a
            successful report, a one-line confirmation.
        """
        where = f"suite '{self.suite_name}', " if self.suite_name else ""
        if self.success:
            return (
                f"Data validation passed: all {self.evaluated} expectations succeeded "
                f"({where}{self.row_count} rows)"
            )
        lines = [
            f"Data validation failed: {len(self.failures)} of {self.evaluated} expectations "
            f"failed ({where}{self.row_count} rows)"
        ]
        for failure in self.failures[:_MAX_MESSAGE_FAILURES]:
            target = f"column '{failure.column}'" if failure.column is not None else "table"
            line = f"  - {failure.expectation} on {target}: {failure.summary}"
            if failure.examples:
                line += f"; examples: {', '.join(failure.examples)}"
            lines.append(line)
        hidden = len(self.failures) - _MAX_MESSAGE_FAILURES
        if hidden > 0:
            lines.append(f"  ... and {hidden} more failed expectations")
        if self.data_docs_index:
            lines.append(f"Data Docs: {self.data_docs_index}")
        return "\n".join(lines)


class DataValidationError(Exception):
    """Raised by :func:`gate_report` when data fails its expectation suite.

    Attributes:
        report: The failed :class:`ValidationReport` (``None`` only when the
            error was raised by hand without one).
    """

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        """Build the error.

        Args:
            message: The error text, normally ``report.message()``.
            report: The failed report the message describes.
        """
        super().__init__(message)
        self.report = report


def load_suite(path: Path) -> dict[str, Any]:
    """Read an expectation suite from a JSON file.

    Args:
        path: JSON file in the format of GX's ``ExpectationSuite.to_json_dict()``.

    Returns:
        The parsed suite as a dict with at least ``name`` and ``expectations``.

    Raises:
        ValueError: If the file is missing, unreadable, not valid JSON or not
            shaped like a suite; the message names the path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ValueError(f"Expectation suite file not found: {path}") from exc
    except OSError as exc:
        raise ValueError(f"Cannot read expectation suite file {path}: {exc}") from exc
    try:
        suite = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Expectation suite file {path} is not valid JSON: {exc}") from exc
    if not isinstance(suite, dict):
        raise ValueError(f"Expectation suite file {path} must hold a JSON object")
    if not isinstance(suite.get("name"), str) or not suite["name"]:
        raise ValueError(f"Expectation suite file {path} has no 'name'")
    expectations = suite.get("expectations")
    if not isinstance(expectations, list) or not all(
        isinstance(e, dict) and isinstance(e.get("type"), str) for e in expectations
    ):
        raise ValueError(
            f"Expectation suite file {path} must have an 'expectations' list of objects "
            "with a 'type'"
        )
    return suite


def validate_frame(
    df: pd.DataFrame,
    suite: dict[str, Any],
    *,
    max_examples: int = 5,
    data_docs_dir: Path | None = None,
    row_level: bool = False,
) -> ValidationReport:
    """Validate a DataFrame against an expectation suite in an ephemeral GX context.

    Args:
        df: The data to validate. It is not modified.
        suite: The suite, as returned by :func:`load_suite`.
        max_examples: Most offending values to keep per failed expectation.
        data_docs_dir: If given, render a GX Data Docs site for this validation
            into this directory (``index.html`` at its root). Nothing is written
            anywhere else.
        row_level: Also collect which rows broke which expectation (GX's COMPLETE result
            format), for quarantining invalid rows of a scoring batch.

    Returns:
        The condensed :class:`ValidationReport`. Failing data never raises; use
        :func:`gate_report` to turn a failed report into an exception.

    Raises:
        ValueError: If ``max_examples`` is negative or the suite cannot be built.
    """
    if max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, got {max_examples}")
    import great_expectations as gx  # heavy: imported only when validating

    started = time.perf_counter()
    suite_name = str(suite.get("name") or "suite")
    expectation_dicts = _with_row_count_check(list(suite.get("expectations") or []))
    docs_dir = Path(data_docs_dir).resolve() if data_docs_dir is not None else None

    # A fresh context holds nothing yet, so everything is added: GX's add_or_update compares
    # each expectation with every stored one (a second per call for a suite of 100).
    context = _ephemeral_context(docs_dir)
    gx_suite = context.suites.add(
        _build_gx_suite(suite_name, expectation_dicts, dict(suite.get("meta") or {}))
    )

    datasource = context.data_sources.add_or_update_pandas(name="keel_pandas")
    asset = datasource.add_dataframe_asset(name="frame")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_frame")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite_name}__frame", data=batch_definition, suite=gx_suite)
    )
    result_format: dict[str, Any] = {
        "result_format": "COMPLETE" if row_level else "SUMMARY",
        "partial_unexpected_count": max(max_examples, 1),
        # GX would also build a pandas query string per expectation by filtering the whole
        # frame (a quarter of its time on 1M rows); Keel never uses it.
        "return_unexpected_index_query": False,
    }
    # GX selects rows dozens of times; on one Arrow chunk per column that is several times faster.
    batch_parameters = {"dataframe": contiguous(df)}

    index_html: str | None = None
    if docs_dir is None:
        suite_result: Any = definition.run(
            batch_parameters=batch_parameters, result_format=result_format
        )
    else:
        from great_expectations.checkpoint.actions import UpdateDataDocsAction
        from great_expectations.core.run_identifier import RunIdentifier

        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{suite_name}__checkpoint",
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="update_data_docs")],
                result_format=result_format,
            )
        )
        checkpoint_result = checkpoint.run(
            batch_parameters=batch_parameters, run_id=RunIdentifier(run_name="keel")
        )
        suite_result = next(iter(checkpoint_result.run_results.values()))
        index_path = docs_dir / "index.html"
        if index_path.is_file():
            index_html = str(index_path)
        else:  # pragma: no cover - GX renders the index with the action above
            logger.warning("GX did not write a Data Docs index at %s", index_path)

    ordered = _in_suite_order(list(suite_result.results), gx_suite)
    report = _condense(
        df,
        suite_name=suite_name,
        gx_results=ordered,
        max_examples=max_examples,
        data_docs_index=index_html,
    )
    if row_level:
        report = _with_row_failures(report, ordered, df)
    logger.info(
        "Validated %d rows x %d columns against suite '%s': %d of %d expectations failed (%.2f s)",
        len(df),
        df.shape[1],
        suite_name,
        len(report.failures),
        report.evaluated,
        time.perf_counter() - started,
    )
    return report


def _int_upcast_by_nulls(df: pd.DataFrame, column: Any, expected: Any) -> bool:
    """An int column holding nulls arrives as float: the nulls are row-level problems."""
    if column not in df.columns or not str(expected).startswith("int"):
        return False
    values = df[column]
    if not pd.api.types.is_float_dtype(values):
        return False
    present = values.dropna()
    return bool(np.isfinite(present).all() and (present == np.floor(present)).all())


def _with_row_failures(
    report: ValidationReport, gx_results: Sequence[Any], df: pd.DataFrame
) -> ValidationReport:
    """Attach per-row failures; any failure without row labels is table-level."""
    from dataclasses import replace

    invalid: dict[Any, list[str]] = {}
    table_level = False
    for result in gx_results:
        if result.success:
            continue
        rows = (result.result or {}).get("unexpected_index_list")
        config = result.expectation_config
        column = (config.kwargs or {}).get("column")
        if config.type == "expect_column_values_to_be_of_type" and _int_upcast_by_nulls(
            df, column, (config.kwargs or {}).get("type_")
        ):
            continue
        if not rows or config.type == "expect_column_values_to_be_unique":
            table_level = True
            continue
        label = f"{config.type} on column '{column}'" if column else config.type
        for row in rows:
            invalid.setdefault(row, []).append(label)
    return replace(report, invalid_rows=invalid, table_level_failed=table_level)


def gate_report(report: ValidationReport) -> None:
    """Stop the pipeline if the data failed validation.

    Args:
        report: The report from :func:`validate_frame`.

    Raises:
        DataValidationError: If ``report.success`` is false; its text is
            ``report.message()`` and it carries ``report``.
    """
    if not report.success:
        logger.error("%s", report.message())
        raise DataValidationError(report.message(), report)


# --------------------------------------------------------------------------- helpers


def _ephemeral_context(docs_dir: Path | None) -> Any:
    """Create an in-memory GX context, with a Data Docs site only when asked.

    The default ephemeral context registers a Data Docs site in a temporary
    directory; it is replaced here so that nothing is written outside ``docs_dir``.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites: dict[str, Any] = {}
    if docs_dir is not None:
        sites[_DOCS_SITE_NAME] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _build_gx_suite(name: str, expectations: list[dict[str, Any]], meta: dict[str, Any]) -> Any:
    """Build a GX ``ExpectationSuite``, refusing any expectation GX cannot build.

    ``gx.ExpectationSuite(expectations=[...])`` only logs and then silently drops an
    expectation whose type it does not know, which would weaken the suite unnoticed;
    each expectation is therefore built here first so that a bad one is an error.
    """
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    built: list[Any] = []
    for index, spec in enumerate(expectations):
        config = {k: v for k, v in spec.items() if k != "id"}  # ids belong to a store
        try:
            built.append(ExpectationConfiguration(**config).to_domain_obj())
        except Exception as exc:
            raise ValueError(
                f"Expectation #{index} ({spec.get('type')!r}) of suite '{name}' is invalid: {exc}"
            ) from exc
    try:
        return gx.ExpectationSuite(name=name, expectations=built, meta=meta)
    except Exception as exc:
        raise ValueError(f"Cannot build expectation suite '{name}': {exc}") from exc


def _with_row_count_check(expectations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the expectations with a ``row count >= 1`` check guaranteed.

    GX passes row-level checks on an empty table, so an empty frame must be
    caught by a table-level check. An existing row-count check with
    ``min_value >= 1`` is kept as is; otherwise one is added.
    """
    for exp in expectations:
        if exp.get("type") != _ROW_COUNT_TYPE:
            continue
        min_value = (exp.get("kwargs") or {}).get("min_value")
        if isinstance(min_value, (int, float)) and min_value >= 1:
            return expectations
    forced = {
        "type": _ROW_COUNT_TYPE,
        "kwargs": {"min_value": 1},
        "meta": {"notes": "Added by keel.validation: an empty table is never valid."},
    }
    return [*expectations, forced]


def _in_suite_order(gx_results: list[Any], gx_suite: Any) -> list[Any]:
    """Sort GX's results (GX groups them by metric) back into the suite's order."""
    position: dict[Any, int] = {}
    for index, expectation in enumerate(gx_suite.expectations):
        if expectation.id is not None:
            position.setdefault(expectation.id, index)
    fallback = len(position)
    return sorted(gx_results, key=lambda r: position.get(r.expectation_config.id, fallback))


def _condense(
    df: pd.DataFrame,
    *,
    suite_name: str,
    gx_results: Sequence[Any],
    max_examples: int,
    data_docs_index: str | None,
) -> ValidationReport:
    """Turn GX's per-expectation results into a :class:`ValidationReport`."""
    failures: list[ExpectationFailure] = []
    results: list[dict[str, Any]] = []
    columns = {str(c) for c in df.columns}
    for gx_result in gx_results:
        config = gx_result.expectation_config
        kwargs: dict[str, Any] = dict(config.kwargs or {})
        exp_type = str(config.type)
        column = kwargs.get("column")
        column = None if column is None else str(column)
        result: dict[str, Any] = dict(gx_result.result or {})
        errors = _exception_messages(gx_result.exception_info)
        success = bool(gx_result.success)
        results.append(
            _json_safe(
                {
                    "type": exp_type,
                    "column": column,
                    "success": success,
                    "kwargs": kwargs,
                    "result": result,
                    "exception": errors[0] if errors else None,
                }
            )
        )
        if success:
            continue
        if column is not None and column not in columns:
            failures.append(
                ExpectationFailure(exp_type, column, f"column '{column}' is missing", [])
            )
        elif errors:
            failures.append(
                ExpectationFailure(
                    exp_type, column, f"could not be evaluated: {_short(errors[0])}", []
                )
            )
        else:
            failures.append(_describe_failure(df, exp_type, column, kwargs, result, max_examples))
    return ValidationReport(
        success=not failures,
        evaluated=len(gx_results),
        failures=failures,
        row_count=len(df),
        suite_name=suite_name,
        results=results,
        data_docs_index=data_docs_index,
    )


def _describe_failure(
    df: pd.DataFrame,
    exp_type: str,
    column: str | None,
    kwargs: Mapping[str, Any],
    result: Mapping[str, Any],
    max_examples: int,
) -> ExpectationFailure:
    """Describe one failed expectation that GX evaluated without an error."""
    if "unexpected_count" in result and "element_count" in result:
        summary = _map_summary(exp_type, kwargs, result)
        unexpected = result.get("partial_unexpected_list") or []
        return ExpectationFailure(
            exp_type, column, summary, _distinct_examples(unexpected, max_examples)
        )

    observed = result.get("observed_value")
    examples: list[str] = []
    if exp_type == _ROW_COUNT_TYPE:
        if observed == 0:
            summary = "table has no rows"
        else:
            summary = f"row count {observed} is outside {_bounds(kwargs)}"
    elif exp_type in (
        "expect_table_columns_to_match_set",
        "expect_table_columns_to_match_ordered_list",
    ):
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        missing = [str(c) for c in mismatched.get("missing") or []]
        unexpected = [str(c) for c in mismatched.get("unexpected") or []]
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if unexpected:
            parts.append(f"unexpected columns {unexpected}")
        summary = "; ".join(parts) or f"columns do not match: observed {_short(repr(observed))}"
        examples = [repr(c) for c in [*missing, *unexpected]][:max_examples]
    elif exp_type == "expect_column_values_to_be_of_type":
        summary = f"dtype is '{observed}', expected '{kwargs.get('type_')}'"
        examples = _column_head(df, column, max_examples)
    elif exp_type == "expect_column_values_to_be_in_type_list":
        summary = f"dtype is '{observed}', expected one of {kwargs.get('type_list')}"
        examples = _column_head(df, column, max_examples)
    elif observed is not None:
        expected = _bounds(kwargs) if ("min_value" in kwargs or "max_value" in kwargs) else None
        summary = f"observed value {_short(repr(_json_safe(observed)))}"
        if expected:
            summary += f" is outside {expected}"
    else:
        summary = f"expectation not met (kwargs {_short(repr(_json_safe(dict(kwargs))))})"
    return ExpectationFailure(exp_type, column, summary, examples)


def _map_summary(exp_type: str, kwargs: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    """Summarise a column-map expectation: how many values were unexpected, and why."""
    count = int(result.get("unexpected_count") or 0)
    total = int(result.get("element_count") or 0)
    pct = 100.0 * count / total if total else 0.0
    if exp_type == "expect_column_values_to_be_between":
        phrase = f"outside {_bounds(kwargs)}"
    elif exp_type == "expect_column_values_to_match_regex":
        phrase = f"do not match regex {kwargs.get('regex')!r}"
    elif exp_type == "expect_column_values_to_not_match_regex":
        phrase = f"match the forbidden regex {kwargs.get('regex')!r}"
    elif exp_type == "expect_column_value_lengths_to_be_between":
        phrase = f"have a length outside {_bounds(kwargs)}"
    else:
        phrase = _MAP_PHRASES.get(exp_type, "unexpected")
    summary = f"{count} of {total} values ({pct:.2f}%) {phrase}"
    mostly = kwargs.get("mostly")
    if isinstance(mostly, (int, float)) and mostly < 1:
        summary += f" (at most {100.0 * (1 - mostly):.2f}% allowed)"
    return summary


def _bounds(kwargs: Mapping[str, Any]) -> str:
    """Format ``min_value``/``max_value`` as an interval, e.g. ``[0, 10]``."""
    low = kwargs.get("min_value")
    high = kwargs.get("max_value")
    left = "(-inf" if low is None else ("(" if kwargs.get("strict_min") else "[") + _num(low)
    right = "inf)" if high is None else _num(high) + (")" if kwargs.get("strict_max") else "]")
    return f"{left}, {right}"


def _num(value: Any) -> str:
    """Format a bound without a spurious ``.0`` (GX turns ``10`` into ``10.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _distinct_examples(values: Sequence[Any], limit: int) -> list[str]:
    """Return up to ``limit`` distinct values, in order, as ``repr`` strings."""
    seen: list[str] = []
    if limit <= 0:
        return seen
    for value in values:
        text = _repr_value(value)
        if text not in seen:
            seen.append(text)
        if len(seen) >= limit:
            break
    return seen


def _column_head(df: pd.DataFrame, column: str | None, limit: int) -> list[str]:
    """Return the first ``limit`` non-null values of a column as ``repr`` strings."""
    if column is None or column not in df.columns or limit == 0:
        return []
    return [_repr_value(v) for v in df[column].dropna().head(limit).tolist()]


def _repr_value(value: Any) -> str:
    """``repr`` a value, unwrapping numpy scalars so ``np.int64(3)`` shows as ``3``."""
    if isinstance(value, np.generic):
        value = value.item()
    return _short(repr(value), 80)


def _exception_messages(info: Any) -> list[str]:
    """Extract the messages of exceptions GX caught while evaluating an expectation.

    GX stores either one ``{"raised_exception": ..., "exception_message": ...}``
    dict or a dict of such dicts keyed by metric id.
    """
    if not isinstance(info, Mapping):
        return []
    if "raised_exception" in info:
        if info.get("raised_exception"):
            return [str(info.get("exception_message") or "unknown error")]
        return []
    messages: list[str] = []
    for value in info.values():
        messages.extend(_exception_messages(value))
    return messages


def _short(text: str, limit: int = 200) -> str:
    """Truncate ``text`` to ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_safe(value: Any) -> Any:
    """Convert ``value`` into plain JSON types (non-finite floats become strings)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray, pd.Index, pd.Series)):
        return [_json_safe(v) for v in list(value)]
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    to_json_dict = getattr(value, "to_json_dict", None)
    if callable(to_json_dict):
        return _json_safe(to_json_dict())
    return str(value)
