"""Outcome-history features: only outcomes known before the scoring moment, in the window."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from keel.config import FeaturizeConfig
from keel.history import (
    HistoryError,
    HistoryIndex,
    HistorySettings,
    add_history,
    history_features,
    settings_from_spec,
)
from keel.table import EVENT_TIME, LABEL_TIME

SETTINGS = HistorySettings(keys=("agent",), window_days=30, prior=2)
NOW = dt.datetime(2016, 2, 1)


def _frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """(agent, made, known, label) per row."""
    return pd.DataFrame(
        {
            "agent": [r[0] for r in rows],
            EVENT_TIME: pd.to_datetime([r[1] for r in rows]),
            LABEL_TIME: pd.to_datetime([r[2] for r in rows]),
            "y": [r[3] for r in rows],
        }
    )


def test_only_outcomes_known_before_the_record_was_made_count() -> None:
    frame = _frame(
        [
            ("a", "2016-01-01", "2016-01-05", 1.0),  # known before the last record was made
            ("a", "2016-01-02", "2016-01-10", 1.0),  # known the day the last one was made
            ("a", "2016-01-03", "2016-02-01", 0.0),  # known after
            ("b", "2016-01-04", "2016-01-06", 0.0),  # another agent
            ("a", "2016-01-10", "2016-03-01", 1.0),  # the record described
        ]
    )
    out = add_history(frame, frame, settings=SETTINGS, target="y")
    last = out.iloc[-1]
    assert last["hist_n_agent"] == 1  # only the first row: strictly before, by day
    base = (1.0 + 0.0) / 2  # all outcomes known in the window before 2016-01-10: rows 1 and 4
    assert last["hist_rate_agent"] == pytest.approx((1.0 + 2 * base) / (1 + 2))
    # A record never sees its own outcome, even when it is known.
    assert out["hist_n_agent"].iloc[0] == 0


def test_the_window_forgets_old_outcomes() -> None:
    frame = _frame(
        [
            ("a", "2015-01-01", "2015-01-02", 1.0),  # 400 days before
            ("a", "2016-01-20", "2016-01-25", 0.0),
            ("a", "2016-02-05", "2016-03-01", 1.0),
        ]
    )
    out = add_history(frame, frame, settings=SETTINGS, target="y")
    assert out["hist_n_agent"].iloc[-1] == 1
    unbounded = HistorySettings(keys=("agent",), window_days=None, prior=2)
    assert add_history(frame, frame, settings=unbounded, target="y")["hist_n_agent"].iloc[-1] == 2


def test_as_of_uses_everything_known_before_the_scoring_day() -> None:
    pool = _frame([("a", "2016-01-01", "2016-01-05", 1.0), ("a", "2016-01-02", "2016-01-20", 0.0)])
    records = pd.DataFrame({"agent": ["a", "new"]})
    out = add_history(
        records, pool, settings=SETTINGS, target="y", as_of=dt.datetime(2016, 1, 21, tzinfo=dt.UTC)
    )
    assert out["hist_n_agent"].tolist() == [2, 0]
    # An agent with no known outcome gets the window's overall rate.
    assert out["hist_rate_agent"].iloc[1] == pytest.approx(0.5)


def test_missing_times_and_keys() -> None:
    frame = _frame([("a", "2016-01-01", "2016-01-02", 1.0)])
    frame.loc[0, EVENT_TIME] = pd.NaT
    out = add_history(frame, frame, settings=SETTINGS, target="y")
    assert np.isnan(out["hist_n_agent"].iloc[0]) and np.isnan(out["hist_rate_agent"].iloc[0])
    with pytest.raises(HistoryError, match="agent"):
        add_history(frame.drop(columns="agent"), frame, settings=SETTINGS, target="y")


def test_matches_a_brute_force_count() -> None:
    rng = np.random.default_rng(3)
    n = 400
    made = pd.Timestamp("2016-01-01") + pd.to_timedelta(rng.integers(0, 200, n), unit="D")
    known = made + pd.to_timedelta(rng.integers(0, 60, n), unit="D")
    frame = pd.DataFrame(
        {
            "agent": rng.choice(["x", "y", None], n),
            EVENT_TIME: made,
            LABEL_TIME: known,
            "y": rng.integers(0, 2, n).astype(float),
        }
    )
    out = add_history(frame, frame, settings=SETTINGS, target="y")
    key = frame["agent"].fillna("-")
    for i in rng.choice(n, 40, replace=False):
        day = frame[EVENT_TIME].iloc[i]
        seen = (
            (key == key.iloc[i])
            & (frame[LABEL_TIME] < day)
            & (frame[LABEL_TIME] >= day - pd.Timedelta(days=30))
        )
        assert out["hist_n_agent"].iloc[i] == seen.sum()


def test_an_index_answers_like_add_history() -> None:
    frame = _frame([("a", "2016-01-01", "2016-01-05", 1.0), ("b", "2016-01-02", "2016-01-03", 0.0)])
    index = HistoryIndex.build(frame, SETTINGS, "y")
    records = pd.DataFrame({"agent": ["a", "b"]})
    when = dt.datetime(2016, 1, 10)
    pd.testing.assert_frame_equal(
        index.apply(records, when),
        add_history(records, frame, settings=SETTINGS, target="y", as_of=when),
    )


def test_names_agree_with_the_config_and_the_spec() -> None:
    config = FeaturizeConfig.model_validate(
        {"history": {"columns": ["agent", "country"]}, "split": {"method": "random"}}
    )
    assert config.history_names == history_features(["agent", "country"])
    assert config.feature_names[-4:] == config.history_names
    assert settings_from_spec({}) is None
    assert settings_from_spec({"keys": ["agent"], "window_days": 30, "prior": 2}) == SETTINGS


@pytest.mark.parametrize(
    "values",
    [
        pd.Series([9.0, 1.5, np.nan, 2.0**60, 7.0]),  # floats: 9.0 is '9', huge whole floats stay
        pd.Series([9, 10, 2**60, 3, 4]),  # integers
        pd.Series([9, "9", 9.0, None, "x"], dtype=object),  # mixed objects
        pd.Series(["a", None, "b", "a", "c"], dtype="string"),
        pd.Series([True, False, True, True, False]),
        pd.Series([1, None, 3, 4, 5], dtype="Int64"),  # an extension dtype: the pandas path
    ],
)
def test_a_few_records_get_the_codes_a_batch_gets(values: pd.Series) -> None:
    # The plain-Python path for a few records (an API request) and the pandas path for a batch
    # must give every record the same history.
    pool = pd.DataFrame(
        {
            "agent": pd.concat([values] * 20, ignore_index=True),
            LABEL_TIME: pd.Timestamp("2016-01-01")
            + pd.to_timedelta(np.arange(len(values) * 20) % 30, unit="D"),
            "y": np.arange(len(values) * 20) % 2 * 1.0,
        }
    )
    index = HistoryIndex.build(pool, SETTINGS, "y")
    when = dt.datetime(2016, 1, 20)
    records = pd.DataFrame({"agent": pd.concat([values] * 20, ignore_index=True)})
    batch = index.apply(records, when)  # over 64 records: the pandas path
    for i in range(len(values)):
        one = index.apply(records.iloc[[i]], when)
        pd.testing.assert_frame_equal(one, batch.iloc[[i]])
    assert batch["hist_n_agent"].notna().all()
    # Records held as columns (an API request) get what `apply` gives a frame of them, small
    # (plain Python) and large (pandas) alike.
    for rows in (records.iloc[[0, 2, 3]], records):
        array = rows["agent"].to_numpy(dtype=object)
        looked = index.lookup({"agent": (array, values.dtype)}, len(rows), when)
        added = index.apply(rows, when)
        assert list(looked) == ["hist_rate_agent", "hist_n_agent"]
        for name, got in looked.items():
            np.testing.assert_array_equal(got, added[name].to_numpy())


def test_lookup_names_a_missing_key_column() -> None:
    index = HistoryIndex.build(_frame([("a", "2016-01-01", "2016-01-05", 1.0)]), SETTINGS, "y")
    with pytest.raises(HistoryError, match=r"need the columns \['agent'\]"):
        index.lookup({"country": (np.array(["PRT"], dtype=object), np.dtype(object))}, 1, NOW)
