"""keel.table: reading sources, stable record keys, derived and time columns."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keel.config import DataConfig, EntityKeyConfig
from keel.table import (
    EVENT_TIME,
    LABEL_TIME,
    ORDER_TIME,
    SourceError,
    add_derived,
    add_entity_key,
    add_times,
    canonical_text,
    content_digest,
    contiguous,
    read_source,
    value_texts,
)

FRAME = pd.DataFrame({"a": [1, 1, 2], "b": ["x", "x", "y"]})
HASH = EntityKeyConfig(method="content_hash", name="key")
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00"
    b"\x1f\xf3\xffa\x00\x00\x00\x04sBIT\x08\x08\x08\x08|\x08d\x88" * 8
)


# --- read_source errors ----------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(SourceError, match=re.escape(f"source file not found: {path}")):
        read_source(path)


def test_a_folder_is_not_a_source(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="source file not found"):
        read_source(tmp_path)


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("empty.csv", b"", "is empty: expected a header row and data"),
        ("blank.csv", b"\n\n", "is empty"),
        ("header.csv", b"a,b\n", "has a header but no rows"),
        ("png.csv", PNG, "is not UTF-8 text"),
        ("latin1.csv", "a,b\ncaf\xe9,1\n".encode("latin-1"), "is not UTF-8 text"),
        ("garbage.csv", bytes(range(256)) * 4, "cannot be read as a table"),
        ("prose.csv", b"Once upon a time\nthere was no table\n", "does not look like a CSV"),
        ("one_column.csv", b"a\n1\n2\n", "has 1 column(s)"),
        ("broken.csv.gz", b"not gzip at all", "cannot be read as a table"),
        ("broken.parquet", b"PAR1 not really parquet", "cannot be read as a table"),
    ],
)
def test_unreadable_sources_are_named(
    tmp_path: Path, name: str, content: bytes, words: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError, match=re.escape(words)) as info:
        read_source(path)
    assert str(path) in str(info.value)


def test_png_named_png_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(PNG)
    with pytest.raises(SourceError, match="not UTF-8"):
        read_source(path)


# --- reading formats -------------------------------------------------------------------------


def test_csv(tmp_path: Path) -> None:
    FRAME.to_csv(tmp_path / "s.csv", index=False)
    assert read_source(tmp_path / "s.csv").equals(FRAME)


def test_csv_gz(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "s.csv.gz", "wt", encoding="utf-8") as fh:
        FRAME.to_csv(fh, index=False)
    assert read_source(tmp_path / "s.csv.gz").equals(FRAME)


@pytest.mark.parametrize("name", ["s.parquet", "S.PARQUET"])
def test_parquet(tmp_path: Path, name: str) -> None:
    FRAME.to_parquet(tmp_path / name)
    out = read_source(tmp_path / name)
    assert out.equals(FRAME)


def test_single_column_parquet_is_refused(tmp_path: Path) -> None:
    FRAME[["a"]].to_parquet(tmp_path / "one.parquet")
    with pytest.raises(SourceError, match="has 1 column"):
        read_source(tmp_path / "one.parquet")


def test_utf8_text_survives(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("country,n\nCôte d'Ivoire,1\n日本,2\n", encoding="utf-8")
    assert list(read_source(tmp_path / "s.csv")["country"]) == ["Côte d'Ivoire", "日本"]


# --- entity keys -----------------------------------------------------------------------------


def test_content_hash_key_is_first_and_unique_for_duplicate_rows() -> None:
    out = add_entity_key(FRAME, HASH)
    assert list(out.columns) == ["key", "a", "b"]
    keys = out["key"]
    assert keys.is_unique  # identical rows are still distinct records
    assert re.fullmatch(r"[0-9a-f]{16}-0", keys.iloc[0])
    assert keys.iloc[1] == keys.iloc[0][:-1] + "1"  # same content, next occurrence
    assert keys.iloc[2].endswith("-0") and keys.iloc[2][:16] != keys.iloc[0][:16]
    assert FRAME.columns.tolist() == ["a", "b"]  # the input is not modified


def test_content_hash_is_stable_across_reads(tmp_path: Path) -> None:
    FRAME.to_csv(tmp_path / "s.csv", index=False)
    first = add_entity_key(read_source(tmp_path / "s.csv"), HASH)["key"]
    second = add_entity_key(read_source(tmp_path / "s.csv"), HASH)["key"]
    assert first.equals(second)
    assert first.equals(add_entity_key(FRAME, HASH)["key"])


@pytest.mark.parametrize("rows", [7, 5000])  # text per value, and per distinct value
def test_content_digest_is_the_hash_of_the_canonical_text(rows: int) -> None:
    """The key's digest is computed per distinct value; it must be, number for number, the
    hash of the canonical text frame (what the keys of every stored prediction were made of)."""
    rng = np.random.default_rng(rows)
    pick = rng.integers(0, 6, rows)
    frame = pd.DataFrame(
        {
            "int": rng.integers(-3, 3, rows),
            "float": np.where(pick == 0, np.nan, rng.choice([0.0, -0.0, 1.5, 2.0, 1e20], rows)),
            "nullable": pd.array(np.where(pick == 1, None, pick), dtype="Int64"),
            "text": pd.Series(np.where(pick == 2, None, rng.choice(["x", "", "日本"], rows))),
            "flag": pick > 2,
            "mixed": pd.Series([[1, "1", True, 1.0, None, "\x00"][k] for k in pick], dtype=object),
            "when": pd.to_datetime("2016-07-01") + pd.to_timedelta(pick, unit="D"),
        },
        index=rng.permutation(rows),
    )
    want = pd.util.hash_pandas_object(frame.apply(canonical_text).fillna("\x00"), index=False)
    got = content_digest(frame)
    assert got.index.equals(frame.index)
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


def test_content_hash_ignores_the_index() -> None:
    keys = add_entity_key(FRAME, HASH)["key"]
    shifted = add_entity_key(FRAME.set_axis([7, 8, 9]), HASH)["key"]
    assert list(shifted) == list(keys)


def test_first_occurrence_key_is_independent_of_other_rows_order() -> None:
    data = pd.DataFrame({"a": [1, 2, 3, 1, 4], "b": ["x", "y", "z", "x", "w"]})
    keys = add_entity_key(data, HASH)["key"]
    reordered_frame = data.iloc[[4, 2, 0, 1, 3]].reset_index(drop=True)
    reordered = add_entity_key(reordered_frame, HASH)["key"]
    assert set(reordered) == set(keys)
    # Each unique row keeps its key wherever it sits; the first (1, x) is still "-0".
    for row, key in zip(data.itertuples(index=False), keys, strict=True):
        if key.endswith("-0"):
            match = reordered[(reordered_frame["a"] == row.a) & (reordered_frame["b"] == row.b)]
            assert match.iloc[0] == key
    # Dropping an unrelated row does not change the others' keys.
    fewer = add_entity_key(data.drop(index=2).reset_index(drop=True), HASH)["key"]
    assert list(fewer) == [k for i, k in enumerate(keys) if i != 2]


def test_content_hash_distinguishes_columns() -> None:
    swapped = pd.DataFrame({"a": ["x", "x", "y"], "b": [1, 1, 2]})
    assert set(add_entity_key(swapped, HASH)["key"]).isdisjoint(add_entity_key(FRAME, HASH)["key"])


def test_content_hash_of_a_row_does_not_depend_on_other_rows_values() -> None:
    grown = pd.concat([FRAME, pd.DataFrame({"a": [np.nan], "b": ["z"]})], ignore_index=True)
    before = add_entity_key(FRAME, HASH)["key"]
    after = add_entity_key(grown, HASH)["key"]
    assert list(after.iloc[:3]) == list(before)


def test_row_number_keys() -> None:
    out = add_entity_key(FRAME, EntityKeyConfig(method="row_number", name="id"))
    assert list(out.columns) == ["id", "a", "b"]
    assert list(out["id"]) == ["r000000000", "r000000001", "r000000002"]
    shuffled = add_entity_key(FRAME.set_axis([9, 3, 5]), EntityKeyConfig(method="row_number"))
    assert list(shuffled["entity_key"]) == ["r000000000", "r000000001", "r000000002"]


def test_column_keys_copy_an_existing_column() -> None:
    data = FRAME.assign(ref=[10, 11, 12])
    out = add_entity_key(data, EntityKeyConfig(method="column", column="ref", name="id"))
    assert list(out.columns) == ["id", "a", "b", "ref"]
    assert list(out["id"]) == ["10", "11", "12"]
    same = add_entity_key(data, EntityKeyConfig(method="column", column="ref", name="ref"))
    assert list(same.columns) == ["a", "b", "ref"]  # key is the column itself: nothing added
    assert list(same["ref"]) == [10, 11, 12]


def test_missing_key_column_is_named() -> None:
    config = EntityKeyConfig(method="column", column="zz", name="id")
    with pytest.raises(SourceError, match="entity key column 'zz' is missing from the source"):
        add_entity_key(FRAME, config)


@pytest.mark.parametrize("method", ["content_hash", "row_number"])
def test_key_name_clashing_with_a_column(method: str) -> None:
    config = EntityKeyConfig(method=method, name="a")  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="entity key name 'a' clashes with a source column"):
        add_entity_key(FRAME, config)


def test_column_key_name_clashing_with_another_column() -> None:
    config = EntityKeyConfig(method="column", column="b", name="a")
    with pytest.raises(SourceError, match="clashes"):
        add_entity_key(FRAME, config)


# --- derived and time columns ----------------------------------------------------------------


def test_add_derived_evaluates_in_order() -> None:
    data = pd.DataFrame({"y": [2016], "m": ["July"], "d": [10], "lead": [9]})
    out = add_derived(data, {"arrival": "date(y, m, d)", "booked": "arrival - days(lead)"})
    assert out["arrival"].iloc[0] == pd.Timestamp("2016-07-10")
    assert out["booked"].iloc[0] == pd.Timestamp("2016-07-01")
    assert "arrival" not in data.columns  # the input is not modified


def test_add_times_fills_reserved_columns(caplog: pytest.LogCaptureFixture) -> None:
    data = pd.DataFrame(
        {"made": ["2016-01-01", "2016-02-01"], "known": ["2016-03-01", "garbage"], "x": [1, 2]}
    )
    config = DataConfig(
        task="binary",
        target="x",
        derived={"known_at": "to_date(known)"},
        event_time="made",
        label_time="known_at",
    )
    with caplog.at_level("WARNING", logger="keel.table"):
        out = add_times(data, config)
    assert list(out[EVENT_TIME]) == [pd.Timestamp("2016-01-01"), pd.Timestamp("2016-02-01")]
    assert out[ORDER_TIME].equals(out[EVENT_TIME].rename(ORDER_TIME))  # split_time defaults
    assert out[LABEL_TIME].iloc[0] == pd.Timestamp("2016-03-01")
    assert pd.isna(out[LABEL_TIME].iloc[1])
    assert "1 rows have no label_time ('known_at')" in caplog.text


def test_add_times_without_time_columns_adds_none() -> None:
    out = add_times(FRAME, DataConfig(task="binary", target="a"))
    assert list(out.columns) == ["a", "b"]


def test_aware_and_mixed_offset_times_become_naive_utc() -> None:
    from keel.config import DataConfig
    from keel.table import EVENT_TIME, add_times

    data = pd.DataFrame(
        {"t": ["2024-03-30T23:30:00+01:00", "2024-03-31T23:30:00+02:00"], "y": [0, 1]}
    )
    out = add_times(data, DataConfig(task="binary", target="y", event_time="t", label_time="t"))
    assert list(out[EVENT_TIME]) == [
        pd.Timestamp("2024-03-30 22:30"),
        pd.Timestamp("2024-03-31 21:30"),
    ]


@pytest.mark.parametrize(
    "values",
    [
        pd.Series([9.0, 1.5, np.nan, 2.0**53, 2.0**53 - 1, -0.0, np.inf]),
        pd.Series([9, -3, 2**60], dtype="int64"),
        pd.Series([9, "9", 9.0, None, "x", 2**60, 2.5, True, np.nan], dtype=object),
        pd.Series(["a", None, "b"], dtype="string"),
        pd.Series([True, False]),
    ],
)
def test_value_texts_are_canonical_text_value_by_value(values: pd.Series) -> None:
    fast = value_texts(values.tolist(), values.dtype)
    slow = canonical_text(values)
    assert fast == [None if pd.isna(t) else t for t in slow]


def test_value_texts_leave_extension_dtypes_to_pandas() -> None:
    assert value_texts([1, None], pd.Series([1, None], dtype="Int64").dtype) is None


# A long column of repeated values is written once per distinct value (factorized); every row
# must still get exactly the text it gets on its own.
@pytest.mark.parametrize(
    "values",
    [
        pd.Series([9.0, 1.5, np.nan, 2.0**53, 2.0**53 - 1, -0.0, 0.0, np.inf, -np.inf]),
        pd.Series([9, -3, 2**60], dtype="int64"),
        pd.Series(["a", None, "b"], dtype="str"),
        pd.Series(["a", None, "b"], dtype="string"),
        pd.Series([True, False]),
        pd.Series([1, None, 3], dtype="Int64"),
        pd.Series(["x", None, "y"], dtype="category"),
        pd.Series([np.nan, np.nan]),
    ],
)
def test_canonical_text_of_a_long_column_matches_each_value_alone(values: pd.Series) -> None:
    long = pd.concat([values] * 700, ignore_index=True).sample(frac=1.0, random_state=1)
    text = canonical_text(long.rename("col"))
    assert text.index.equals(long.index) and text.name == "col"
    alone = canonical_text(values)  # a short column: no factorizing
    assert text.dtype == alone.dtype
    expected = [alone.iloc[i] for i in long.index % len(values)]
    assert [None if pd.isna(t) else t for t in text] == [
        None if pd.isna(t) else t for t in expected
    ]


def test_content_hash_key_is_the_hex_digest_of_the_row_text() -> None:
    key = add_entity_key(FRAME, HASH)["key"]
    text = FRAME.apply(canonical_text)
    digest = pd.util.hash_pandas_object(text, index=False).tolist()
    assert key.tolist() == [f"{digest[0]:016x}-0", f"{digest[1]:016x}-1", f"{digest[2]:016x}-0"]


def test_contiguous_joins_the_arrow_chunks_of_a_parquet_read(tmp_path: Path) -> None:
    n = 5000
    frame = pd.DataFrame(
        {"s": pd.Series([f"v{i % 7}" for i in range(n)], dtype="str"), "x": np.arange(n)}
    )
    frame.loc[3, "s"] = None
    frame.to_parquet(tmp_path / "t.parquet", row_group_size=1000)
    read = pd.read_parquet(tmp_path / "t.parquet")
    assert read["s"].array.__arrow_array__().num_chunks == 5
    joined = contiguous(read)
    assert joined["s"].array.__arrow_array__().num_chunks == 1
    pd.testing.assert_frame_equal(joined, read)
    assert read["s"].array.__arrow_array__().num_chunks == 5  # the input is left as it was
