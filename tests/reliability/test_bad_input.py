"""The catalogue of bad inputs: each case has one exact outcome, and nothing earlier is lost.

Areas: the training source (CSV, CSV.gz, parquet) through `keel stage`, the scoring batch and
the outcomes feed through their tasks, `params.yaml` and the CLI arguments through the real
`keel` command, and the API through its app. Every case asserts the outcome (a refusal whose
message names the problem, a quarantine with the reason stored, or a documented acceptance)
and that the earlier data, model, registry and predictions are unchanged (rows may only be
added where the outcome says so). Each case is recorded in reports/reliability/catalogue.json.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from flows.cli import app
from keel.config import load_params
from keel.layout import ProjectPaths
from keel.registry.models import AliasChange
from keel.store import Outcome, Prediction, QuarantinedRow
from tasks.production import (
    BatchRejectedError,
    load_records,
    record_known_outcomes,
    score_batch,
)
from tests.api.conftest import API_KEY, make_app
from tests.api.helpers import TestClient, to_records
from tests.reliability.conftest import (
    Figures,
    assert_only_added,
    copy_project,
    db_rows,
    outputs_md5,
    sqlite_url,
)

pytestmark = pytest.mark.slow
UTC = dt.UTC
EARLIER = dt.datetime(2016, 7, 8, tzinfo=UTC)  # a batch scored before every case
AS_OF = dt.datetime(2016, 7, 15, tzinfo=UTC)  # the batch each scoring case sends
SQL = "'; DROP TABLE predictions; --"
SQL_TEXTS = [SQL, "1 OR 1=1", "x' UNION SELECT * FROM model_versions --", "Robert'); --"]
runner = CliRunner()


def keel(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def flat(output: str) -> str:
    """The output on one line, without the boxes Typer draws around usage errors."""
    for box in "│╭╮╰╯─":
        output = output.replace(box, " ")
    return " ".join(output.split())


@dataclass(frozen=True)
class Entry:
    area: str
    case: str
    outcome: str
    detail: str


@pytest.fixture(scope="module")
def catalogue(figures: Figures) -> Iterator[list[Entry]]:
    entries: list[Entry] = []
    yield entries
    section = figures.section("catalogue")
    section["cases"] = [e.__dict__ for e in sorted(entries, key=lambda e: (e.area, e.case))]
    section["tried"] = len(entries)
    section["passed"] = len(entries)  # an entry is recorded only once its case has passed


@pytest.fixture(scope="module")
def base(champion: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The champion project with one batch scored and the outcomes known by then recorded."""
    root = copy_project(champion, tmp_path_factory.mktemp("catalogue") / "base")
    params = load_params(root / "params.yaml")
    assert score_batch.fn(root, params, EARLIER).written > 0
    assert record_known_outcomes.fn(root, params, EARLIER)["new"] > 0
    return root


@pytest.fixture()
def project(base: Path, tmp_path: Path) -> Path:
    return copy_project(base, tmp_path / "project")


class Unchanged:
    """Snapshot of a project's outputs and database; `check` asserts nothing was lost."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.outputs = outputs_md5(root)
        self.rows = db_rows(sqlite_url(root))

    def check(self, added_to: frozenset[str] = frozenset()) -> None:
        assert outputs_md5(self.root) == self.outputs
        assert_only_added(self.rows, db_rows(sqlite_url(self.root)), added_to)


# ---------------------------------------------------------------- the training source


def _csv_gz(frame: pd.DataFrame) -> bytes:
    return gzip.compress(frame.to_csv(index=False).encode("utf-8"))


def _run(root: Path, stage: str) -> tuple[int, str]:
    return keel("stage", stage, "--params", str(root / "params.yaml"))


def _put(frame: pd.DataFrame, row: int, column: str, value: object) -> None:
    frame[column] = frame[column].astype(object)
    frame.iloc[row, frame.columns.get_loc(column)] = value


# One source holds every fault below, each in its own row and column, so one validation run
# (several seconds of Great Expectations on 2 cores) checks them all; the message must name
# each fault's expectation and column, and show its offending value when there is one.
SOURCE_FAULTS: dict[str, tuple[str, object, str, str]] = {
    # case: (column, bad value, the expectation that must fail, the value as shown)
    "wrong dtype": ("lead_time", "soon", "expect_column_values_to_be_of_type", "dtype is 'str'"),
    "null where none is allowed": ("hotel", None, "expect_column_values_to_not_be_null", ""),
    "NaN in a required number": ("adults", np.nan, "expect_column_values_to_not_be_null", ""),
    "inf in a number": ("adr", np.inf, "expect_column_values_to_be_between", "inf"),
    "label outside {0, 1}": ("is_canceled", 2, "expect_column_values_to_be_in_set", "2"),
    "unseen category in a closed set": (
        "meal",
        "Motel",
        "expect_column_values_to_be_in_set",
        "'Motel'",
    ),
    "timestamp with a time zone": (
        "reservation_status_date",
        "2016-07-01T00:00:00+05:00",
        "expect_column_values_to_match_regex",
        "'2016-07-01T00:00:00+05:00'",
    ),
    "timestamp in the future": (
        "arrival_date_year",
        2031,
        "expect_column_values_to_be_between",
        "2031",
    ),
    "SQL-looking strings in text columns": (
        "market_segment",
        SQL,
        "expect_column_values_to_be_in_set",
        repr(SQL),
    ),
    "a 20 MB field (very large value)": (
        "country",
        "X" * 20_000_000,
        "expect_column_value_lengths_to_be_between",
        "",
    ),
}


def test_source_faults_are_each_named(
    project: Path, hotel_sample: pd.DataFrame, catalogue: list[Entry]
) -> None:
    before = Unchanged(project)
    frame = hotel_sample.copy()
    for row, (column, value, _, _) in enumerate(SOURCE_FAULTS.values()):
        _put(frame, 10 + row, column, value)
    for row, column in enumerate(("customer_type", "deposit_type", "distribution_channel")):
        _put(frame, 30 + row, column, SQL_TEXTS[row])  # more text columns with SQL in them
    frame["promo_code"] = "SPRING"  # an extra column
    frame = frame.drop(columns=["babies"])  # and a missing one
    text = frame.to_csv(index=False)
    (project / "data/raw/hotel_bookings.csv.gz").write_bytes(
        gzip.compress(text[: len(text) - 60].encode("utf-8"))  # the last row is cut short
    )
    assert _run(project, "ingest")[0] == 0
    code, output = _run(project, "validate")
    assert code == 1
    message = output[output.index("error: stage 'validate' failed") :]
    assert len(message) < 5000, f"the message is {len(message)} characters long"
    lines = [line.strip() for line in message.splitlines() if line.strip().startswith("- ")]

    def named(expectation: str, column: str, shown: str) -> str:
        found = [line for line in lines if expectation in line and f"on column '{column}'" in line]
        assert found, f"{expectation} on {column!r} not in {message!r}"
        assert shown in found[0], f"{shown!r} not in {found[0]!r}"
        return found[0]

    for case, (column, _, expectation, shown) in SOURCE_FAULTS.items():
        line = named(expectation, column, shown)
        catalogue.append(Entry("source", case, "refused", line[:300]))
    for column in ("customer_type", "deposit_type", "distribution_channel"):
        named("expect_column_values_to_be_in_set", column, "")
    columns = next(line for line in lines if "expect_table_columns_to_match_set" in line)
    assert "'babies'" in columns and "'promo_code'" in columns
    catalogue.append(Entry("source", "missing column", "refused", columns[:300]))
    catalogue.append(Entry("source", "extra column", "refused", columns[:300]))
    cut = named("expect_column_values_to_not_be_null", "reservation_status_date", "")
    catalogue.append(Entry("source", "truncated last row", "refused", cut[:300]))

    code, output = _run(project, "featurize")  # the refused table never reaches training
    assert code != 0 and "records a failed validation" in output
    before.check()


def _truncated_gzip(frame: pd.DataFrame) -> bytes:
    data = _csv_gz(frame)
    return data[: len(data) * 2 // 3]


UNREADABLE: dict[str, tuple[Callable[[pd.DataFrame], bytes], str]] = {
    "truncated gzip file": (_truncated_gzip, "cannot be read as a table"),
    "not UTF-8 (UTF-16)": (
        lambda f: gzip.compress(f.to_csv(index=False).encode("utf-16")),
        "is not UTF-8 text",
    ),
    "header only, no rows": (lambda f: _csv_gz(f.iloc[:0]), "has a header but no rows"),
    "empty file": (lambda f: gzip.compress(b""), "is empty"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_source(
    case: str, project: Path, hotel_sample: pd.DataFrame, catalogue: list[Entry]
) -> None:
    write, words = UNREADABLE[case]
    before = Unchanged(project)
    table = outputs_md5(project)
    (project / "data/raw/hotel_bookings.csv.gz").write_bytes(write(hotel_sample))
    code, output = _run(project, "ingest")
    assert code == 1 and words in output, output
    before.check()
    assert outputs_md5(project) == table  # the last good table, features and model stay
    catalogue.append(Entry("source", case, "refused", output.strip().splitlines()[-1][:300]))


def test_duplicate_rows_are_distinct_bookings(
    project: Path, hotel_sample: pd.DataFrame, catalogue: list[Entry]
) -> None:
    before = Unchanged(project)
    doubled = pd.concat([hotel_sample, hotel_sample.iloc[:50]], ignore_index=True)
    (project / "data/raw/hotel_bookings.csv.gz").write_bytes(_csv_gz(doubled))
    assert _run(project, "ingest")[0] == 0
    assert _run(project, "validate")[0] == 0
    table = pd.read_parquet(ProjectPaths(project).table)
    assert table["booking_id"].is_unique and len(table) == len(doubled)
    assert table["booking_id"].str.endswith("-1").sum() >= 50
    before.check()
    catalogue.append(
        Entry("source", "duplicate rows", "accepted", "identical rows are distinct keys (-0, -1)")
    )


def test_parquet_source(project: Path, hotel_sample: pd.DataFrame, catalogue: list[Entry]) -> None:
    before = Unchanged(project)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["ingest"]["source"] = "data/raw/bookings.parquet"
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    target = project / "data/raw/bookings.parquet"

    frame = hotel_sample.copy()
    frame["adr"] = frame["adr"].astype(str)  # numbers stored as text
    frame.to_parquet(target)
    assert _run(project, "ingest")[0] == 0
    code, output = _run(project, "validate")
    assert code == 1 and "expect_column_values_to_be_of_type on column 'adr'" in output
    catalogue.append(Entry("source", "parquet: numbers stored as text", "refused", "adr"))

    hotel_sample.to_parquet(target)
    target.write_bytes(target.read_bytes()[:-200])  # the footer is cut off
    code, output = _run(project, "ingest")
    assert code == 1 and "cannot be read as a table" in output
    catalogue.append(
        Entry("source", "parquet: truncated file", "refused", "cannot be read as a table")
    )
    before.check()


# ---------------------------------------------------------------- the scoring batch


def _open_rows(feed: pd.DataFrame, n: int) -> pd.Index:
    end = pd.Timestamp(AS_OF.replace(tzinfo=None))
    rows = (
        (feed["_event_time"] > end - pd.Timedelta(days=7))
        & (feed["_event_time"] <= end)
        & ~(feed["_label_time"] <= end)
    )
    return feed.index[rows][:n]


def _quarantined(root: Path) -> dict[str, tuple[list[str], dict[str, Any]]]:
    engine = create_engine(sqlite_url(root))
    with Session(engine) as s:
        held = {q.entity_key: (q.reasons, q.record) for q in s.scalars(select(QuarantinedRow))}
    engine.dispose()
    return held


def test_bad_batch_is_refused_naming_each_problem(project: Path, catalogue: list[Entry]) -> None:
    params = load_params(project / "params.yaml")
    before = Unchanged(project)
    feed = load_records(project, params).copy()
    feed["promo_code"] = "SPRING"
    feed["lead_time"] = feed["lead_time"].astype(object)
    feed.loc[_open_rows(feed, 3), "lead_time"] = "soon"
    feed = feed.drop(columns=["babies"])
    with pytest.raises(BatchRejectedError) as refused:
        score_batch.fn(project, params, AS_OF, records=feed)
    message = str(refused.value)
    assert "missing columns ['babies']" in message and "'promo_code'" in message
    assert "expect_column_values_to_be_of_type on column 'lead_time'" in message
    for case in ("missing column", "extra column", "wrong dtype (text in a number column)"):
        catalogue.append(Entry("scoring batch", case, "refused", message[:300]))
    before.check()


# case: (column, bad value in one open record, the column its stored reason names)
BATCH_QUARANTINES: dict[str, tuple[str, object, str]] = {
    "null where none is allowed": ("adults", np.nan, "adults"),
    "NaN in a number": ("lead_time", np.nan, "lead_time"),
    "inf in a number": ("adr", np.inf, "adr"),
    "unseen category in a closed set": ("hotel", "Motel", "hotel"),
    "label outside {0, 1} in the batch": ("is_canceled", 7, "is_canceled"),
    "SQL-looking strings in a text field": ("meal", SQL, "meal"),
    "timestamp with a time zone": (
        "reservation_status_date",
        "2016-09-01T00:00:00+05:00",
        "reservation_status_date",
    ),
}


def test_bad_rows_are_quarantined_each_with_its_reason(
    project: Path, catalogue: list[Entry]
) -> None:
    params = load_params(project / "params.yaml")
    before = Unchanged(project)
    feed = load_records(project, params).copy()
    rows = _open_rows(feed, len(BATCH_QUARANTINES) + 1)
    for row, (column, value, _) in zip(rows, BATCH_QUARANTINES.values(), strict=False):
        if isinstance(value, float):
            feed[column] = feed[column].astype("float64")  # as a CSV reader would give it
        elif isinstance(value, str):
            feed[column] = feed[column].astype(object)
        feed.loc[row, column] = value
    result = score_batch.fn(project, params, AS_OF, records=feed)
    assert result.quarantined == len(BATCH_QUARANTINES)
    assert result.written == len(_open_rows(feed, 10_000)) - len(BATCH_QUARANTINES)
    held = _quarantined(project)
    for row, (case, (_, _, column)) in zip(rows, BATCH_QUARANTINES.items(), strict=False):
        reasons, _record = held[feed.loc[row, "booking_id"]]
        assert any(f"'{column}'" in r for r in reasons), (case, reasons)
        catalogue.append(Entry("scoring batch", case, "quarantined", f"reason: {reasons}"))
    assert SQL in {record["meal"] for _, record in held.values()}  # verbatim, as data
    scored = feed.loc[rows[-1], "booking_id"]  # the untouched record was scored
    engine = create_engine(sqlite_url(project))
    with Session(engine) as s:
        assert s.scalar(select(Prediction.score).where(Prediction.entity_key == scored))
    engine.dispose()
    before.check(added_to=frozenset({"score_batches", "predictions", "quarantine"}))


def test_batch_edge_cases(project: Path, catalogue: list[Entry]) -> None:
    params = load_params(project / "params.yaml")
    feed = load_records(project, params)
    before = Unchanged(project)

    future = dt.datetime.now(UTC) + dt.timedelta(days=30)
    with pytest.raises(BatchRejectedError, match="is in the future"):
        score_batch.fn(project, params, future, records=feed)
    catalogue.append(Entry("scoring batch", "as_of in the future", "refused", "is in the future"))

    # The same instant written in another time zone is the same batch, already scored.
    elsewhere = EARLIER.astimezone(dt.timezone(dt.timedelta(hours=2)))
    again = score_batch.fn(project, params, elsewhere, records=feed)
    assert again.skipped and "already scored" in again.message
    catalogue.append(
        Entry("scoring batch", "as_of in another time zone", "accepted", again.message)
    )

    empty = score_batch.fn(project, params, dt.datetime(2010, 1, 1, tzinfo=UTC), records=feed)
    assert empty.written == 0 and "nothing to score" in empty.message
    catalogue.append(Entry("scoring batch", "empty period", "accepted", empty.message))
    before.check()


# ---------------------------------------------------------------- the outcomes feed


def _outcomes(root: Path) -> dict[str, float]:
    engine = create_engine(sqlite_url(root))
    with Session(engine) as s:
        known = {o.entity_key: o.label for o in s.scalars(select(Outcome))}
    engine.dispose()
    return known


def test_bad_outcomes(project: Path, catalogue: list[Entry]) -> None:
    params = load_params(project / "params.yaml")
    feed = load_records(project, params).copy()
    when = dt.datetime(2016, 9, 1, tzinfo=UTC)
    fresh = feed.index[
        (feed["_label_time"] > pd.Timestamp("2016-07-08"))
        & (feed["_label_time"] <= pd.Timestamp("2016-09-01"))
    ]
    bad_label, nan_label, future, sql_key = fresh[:4]
    feed["is_canceled"] = feed["is_canceled"].astype(object)
    feed.loc[bad_label, "is_canceled"] = 2
    feed.loc[nan_label, "is_canceled"] = np.nan
    feed.loc[future, "_label_time"] = pd.Timestamp("2031-01-01")
    feed["booking_id"] = feed["booking_id"].astype(object)
    feed.loc[sql_key, "booking_id"] = SQL
    before = Unchanged(project)

    counts = record_known_outcomes.fn(project, params, when, records=feed)
    known = _outcomes(project)
    keys = feed["booking_id"]
    assert keys[bad_label] not in known  # never recorded: quarantined with the reason
    reasons, record = _quarantined(project)[keys[bad_label]]
    assert reasons == ["label 2 of 'is_canceled' is not 0 or 1"], reasons
    assert record["is_canceled"] == 2
    catalogue.append(Entry("outcomes feed", "label outside {0, 1}", "quarantined", reasons[0]))
    assert keys[nan_label] not in known
    catalogue.append(
        Entry("outcomes feed", "missing label", "accepted", "not an outcome yet: not recorded")
    )
    assert keys[future] not in known
    catalogue.append(
        Entry("outcomes feed", "outcome dated in the future", "accepted", "recorded once known")
    )
    assert known[SQL] in (0.0, 1.0)  # stored verbatim as data; every table still there
    catalogue.append(
        Entry("outcomes feed", "SQL-looking entity key", "accepted", "stored verbatim")
    )
    assert counts["quarantined"] == 1
    before.check(added_to=frozenset({"outcomes", "quarantine"}))

    # Once more: nothing new, nothing quarantined twice.
    again = record_known_outcomes.fn(project, params, when, records=feed)
    assert again["new"] == 0 and again["quarantined"] == 0
    assert len(_outcomes(project)) == len(known)


# ---------------------------------------------------------------- params.yaml and the CLI


def _dump(raw: dict[str, Any]) -> str:
    return yaml.safe_dump(raw, sort_keys=False)


def _change(section: str, key: str, value: object) -> Callable[[dict[str, Any]], str]:
    def edit(raw: dict[str, Any]) -> str:
        raw[section][key] = value
        return _dump(raw)

    return edit


def _leaking(raw: dict[str, Any]) -> str:
    raw["featurize"]["numeric"].append("booking_changes")
    return _dump(raw)


PARAMS_CASES: dict[str, tuple[Callable[[dict[str, Any]], str | bytes], list[str]]] = {
    # case: (the params file, as text, from the good one; words the error must contain)
    "malformed YAML": (lambda r: _dump(r) + "featurize: [unclosed\n", ["is not valid YAML"]),
    "unknown key": (_change("train", "sede", 1), ["train.sede", "Extra inputs are not permitted"]),
    "unknown section": (
        lambda r: _dump({**r, "training": {"seed": 1}}),
        ["training", "Extra inputs are not permitted"],
    ),
    "wrong type": (_change("train", "num_boost_round", "many"), ["train.num_boost_round"]),
    "value out of range": (
        _change("evaluate", "threshold", 1.5),
        ["evaluate.threshold", "less than 1"],
    ),
    "NaN as a number": (
        _change("train", "recency_half_life_days", float("nan")),
        ["train.recency_half_life_days"],
    ),
    "empty file": (lambda r: "", ["must hold a mapping"]),
    "not UTF-8": (lambda r: _dump(r).encode("utf-16"), ["is not valid YAML"]),
    "a Python object tag": (
        lambda r: _dump(r) + "exploit: !!python/object/apply:os.system ['touch pwned']\n",
        ["is not valid YAML"],
    ),
    "a leaking feature": (_leaking, ["booking_changes", "leak"]),
    "source outside the project": (
        _change("ingest", "source", "../../etc/passwd"),
        ["ingest.source", "outside the project"],
    ),
    "suite outside the project": (
        _change("validate", "suite", "expectations/../../x.json"),
        ["validate.suite", "outside the project"],
    ),
}


@pytest.mark.parametrize("case", list(PARAMS_CASES))
def test_bad_params(case: str, project: Path, catalogue: list[Entry]) -> None:
    edit, words = PARAMS_CASES[case]
    before = Unchanged(project)
    path = project / "params.yaml"
    text = edit(yaml.safe_load(path.read_text()))
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, output = keel("stage", "ingest", "--params", str(path))
    assert code == 1, output
    for word in words:
        assert word in output, f"{case}: {word!r} not in {output!r}"
    assert not (project / "pwned").exists() and not Path("pwned").exists()
    before.check()
    catalogue.append(Entry("params.yaml", case, "refused", output.strip().splitlines()[-1][:300]))


def test_bad_cli_arguments(project: Path, tmp_path: Path, catalogue: list[Entry]) -> None:
    params = str(project / "params.yaml")
    before = Unchanged(project)
    cases = [
        ("params file missing", ["score", "--params", str(tmp_path / "nope.yaml")], "not found"),
        ("params is a folder", ["score", "--params", str(project)], "is a directory"),
        ("malformed --as-of", ["score", "--params", params, "--as-of", "yesterday"], "--as-of"),
        (
            "--as-of with a time zone",
            ["score", "--params", params, "--as-of", "2016-07-15T00:00:00+02:00"],
            "--as-of",
        ),
        (
            "--as-of in the future",
            ["score", "--params", params, "--as-of", "2999-01-01"],
            "is in the future",
        ),
        ("unknown stage", ["stage", "deploy", "--params", params], "No such command"),
        (
            "unknown model version",
            ["models", "promote", "99", "--reason", "x", "--params", params],
            "no version 99",
        ),
        (
            "SQL-looking model name",
            ["models", "show", "1", "--model", SQL, "--params", params],
            "no version 1",
        ),
    ]
    for case, args, words in cases:
        code, output = keel(*args)
        message = flat(output)
        assert code != 0, f"{case}: {output}"
        assert words in message, f"{case}: {words!r} not in {message!r}"
        catalogue.append(Entry("CLI", case, "refused", message[-300:]))
    before.check()

    # A SQL-looking reason is stored verbatim, as data; nothing else changes.
    code, output = keel("models", "promote", "1", "--reason", SQL, "--params", params)
    assert code == 0, output
    engine = create_engine(sqlite_url(project))
    with Session(engine) as s:
        reasons = set(s.scalars(select(AliasChange.reason)))
    engine.dispose()
    assert SQL in reasons
    before.check(added_to=frozenset({"alias_history", "audit_events"}))
    catalogue.append(Entry("CLI", "SQL-looking --reason", "accepted", "stored verbatim"))


# ---------------------------------------------------------------- the API


@dataclass(frozen=True)
class Api:
    client: TestClient
    project: Path
    record: dict[str, Any]  # one valid record of the served model's request schema


@pytest.fixture()
def api(project: Path) -> Iterator[Api]:
    with TestClient(make_app(project), headers={"X-API-Key": API_KEY}) as client:
        features = client.get("/v1/model").json()["served"]["features"]
        params = load_params(project / "params.yaml")
        frame = load_records(project, params).iloc[:1]
        record = to_records(frame, features["numeric"] + features["other"])[0]
        assert client.post("/v1/predict", json={"records": [record]}).status_code == 200
        yield Api(client, project, record)


def _with(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"records": [{**record, **changes}]}


def _raw(record: dict[str, Any], field: str, token: str) -> bytes:
    """The body as JSON text with `token` (not JSON: NaN, Infinity, 1e999) as a field's value."""
    return json.dumps(_with(record, **{field: "__token__"})).replace('"__token__"', token).encode()


def _nested(depth: int) -> bytes:
    return b'{"records": ' + b"[" * depth + b"]" * depth + b"}"


class _Chunks(io.RawIOBase):
    """A request body of unknown length (sent chunked), far over the limit."""

    def __init__(self, total: int) -> None:
        self.left = total

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left, 65536)
        buffer[:n] = b" " * n
        self.left -= n
        return n


def _api_cases(record: dict[str, Any]) -> list[tuple[str, dict[str, Any], int, str]]:
    missing = {"records": [{k: v for k, v in record.items() if k != "adr"}]}
    latin1 = '{"records": ["Mál"]}'.encode("latin-1")
    return [
        # case: (the request, status, words of the body; a 422 names exactly one field)
        ("malformed JSON", {"content": b'{"records": [}'}, 400, "malformed JSON"),
        ("not UTF-8 (Latin-1)", {"content": latin1}, 400, "not UTF-8"),
        ("empty body", {"content": b""}, 400, "the body is empty"),
        ("nested 100,000 deep", {"content": _nested(100_000)}, 400, "nested too deeply"),
        ("top-level array", {"json": [record]}, 422, "valid dictionary"),
        ("empty list of records", {"json": {"records": []}}, 422, "at least 1 item"),
        ("missing field", {"json": missing}, 422, "records[0].adr"),
        ("extra field", {"json": _with(record, promo_code="X")}, 422, "records[0].promo_code"),
        ("wrong dtype", {"json": _with(record, lead_time="soon")}, 422, "records[0].lead_time"),
        ("null in a record", {"json": {"records": [None]}}, 422, "records[0]"),
        ("NaN", {"content": _raw(record, "adr", "NaN")}, 422, "records[0].adr"),
        ("Infinity", {"content": _raw(record, "adr", "-Infinity")}, 422, "records[0].adr"),
        ("1e999", {"content": _raw(record, "adr", "1e999")}, 422, "records[0].adr"),
        ("too many records", {"json": {"records": [record] * 1001}}, 413, "too many records"),
        ("oversized JSON (declared)", {"content": b" " * 2_000_000}, 413, "body too large"),
        ("oversized JSON (streamed)", {"content": _Chunks(3_000_000)}, 413, "body too large"),
    ]


def test_bad_api_requests(api: Api, catalogue: list[Entry]) -> None:
    client, project = api.client, api.project
    before = Unchanged(project)
    for case, request, status, words in _api_cases(api.record):
        headers = {"content-type": "application/json"}
        response = client.post("/v1/predict", headers=headers, **request)
        assert response.status_code == status, f"{case}: {response.status_code} {response.text}"
        assert words in response.text, f"{case}: {words!r} not in {response.text[:500]!r}"
        if status == 422:
            assert len(response.json()["detail"]) == 1, f"{case}: {response.text[:500]}"
        catalogue.append(Entry("API", case, f"refused ({status})", response.text[:200]))
    for case, headers, words in [
        ("no API key", {"X-API-Key": ""}, "missing API key"),
        ("wrong API key", {"X-API-Key": "not-the-key"}, "invalid API key"),
    ]:
        response = client.post("/v1/predict", json=_with(api.record), headers=headers)
        assert response.status_code == 401 and words in response.text
        catalogue.append(Entry("API", case, "refused (401)", response.text[:200]))
    metrics = client.get("/metrics").text
    assert 'keel_api_errors_total{kind="server"}' not in metrics  # no 500 among them
    before.check(added_to=frozenset({"score_batches", "predictions"}))  # the fixture's request


def test_odd_but_valid_api_requests(api: Api, catalogue: list[Entry]) -> None:
    client, project, record = api.client, api.project, api.record
    before = Unchanged(project)
    texts = {"hotel": SQL, "meal": SQL_TEXTS[1], "country": SQL_TEXTS[2], "customer_type": SQL}
    response = client.post("/v1/predict", json=_with(record, booking_id=SQL, **texts))
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["entity_key"] == SQL
    catalogue.append(
        Entry("API", "SQL-looking strings in every text field", "accepted (200)", "unseen values")
    )
    twice = {"records": [{**record, "booking_id": "B-1"}] * 2}
    response = client.post("/v1/predict", json=twice)
    assert response.status_code == 200
    assert [p["entity_key"] for p in response.json()["predictions"]] == ["B-1", "B-1"]
    catalogue.append(
        Entry("API", "duplicate entity keys in one request", "accepted (200)", "both scored")
    )
    big = client.post("/v1/predict", json=_with(record, adr=1e308))
    assert big.status_code == 200, big.text  # finite: missing to the model, as in a batch
    catalogue.append(Entry("API", "1e308 (finite, beyond float32)", "accepted (200)", "missing"))
    engine = create_engine(sqlite_url(project))
    deadline = dt.datetime.now(UTC) + dt.timedelta(seconds=15)
    stored: list[str] = []
    while dt.datetime.now(UTC) < deadline and SQL not in stored:
        with Session(engine) as s:
            stored = list(s.scalars(select(Prediction.entity_key)))
    engine.dispose()
    assert SQL in stored  # the served prediction was logged, its key verbatim
    before.check(added_to=frozenset({"score_batches", "predictions"}))


def test_catalogue_is_large_enough(catalogue: list[Entry]) -> None:
    # Runs last in this module: every case above recorded its entry when it passed.
    if len(catalogue) < 30:
        pytest.skip("run the whole module to count the catalogue")
    assert len({(e.area, e.case) for e in catalogue}) >= 30
