"""keel.splits: the label-aware time split and the seeded random split."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from keel.config import SplitConfig
from keel.splits import Split, SplitError, split_frame
from keel.table import LABEL_TIME, ORDER_TIME

POLICY = SplitConfig(
    method="time",
    validation_start=dt.date(2016, 5, 1),
    cutoff=dt.date(2016, 7, 1),
    holdout_end=dt.date(2016, 8, 31),
)
PARTS = ("train", "fit", "valid", "holdout")


def frame(rows: list[tuple[str | None, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            ORDER_TIME: pd.to_datetime([o for o, _ in rows], format="mixed"),
            LABEL_TIME: pd.to_datetime([k for _, k in rows], format="mixed"),
            "x": range(len(rows)),
        }
    )


# (order time, label known) per row; the comment says where the row belongs.
ROWS: list[tuple[str | None, str | None]] = [
    ("2016-01-10", "2016-01-12"),  # 0 fit + train
    ("2016-04-20", "2016-05-05"),  # 1 label after validation_start: train, not fit
    ("2016-05-10", "2016-05-12"),  # 2 valid + train
    ("2016-06-28", "2016-07-03"),  # 3 label after cutoff: valid, never train
    ("2016-07-01", "2016-07-04"),  # 4 holdout (first day)
    ("2016-08-31 23:59", "2016-09-02"),  # 5 holdout (last day, inclusive)
    ("2016-09-01", "2016-09-03"),  # 6 after the holdout
    ("2016-04-30", "2016-05-01"),  # 7 label known exactly at validation_start: fit
    ("2016-06-30", "2016-07-01"),  # 8 label known exactly at cutoff: train
    (None, "2016-01-01"),  # 9 no order time: nowhere
]


def rows_of(mask: pd.Series) -> list[int]:
    return sorted(mask[mask].index)


@pytest.fixture(scope="module")
def split() -> Split:
    return split_frame(frame(ROWS), POLICY)


@pytest.mark.parametrize(
    "part, expected",
    [
        ("train", [0, 1, 2, 7, 8]),
        ("fit", [0, 7]),
        ("valid", [2, 3, 8]),
        ("holdout", [4, 5]),
    ],
)
def test_time_split_parts(split: Split, part: str, expected: list[int]) -> None:
    assert rows_of(getattr(split, part)) == expected


def test_masks_are_boolean_and_aligned(split: Split) -> None:
    for part in PARTS:
        mask = getattr(split, part)
        assert mask.dtype == bool
        assert list(mask.index) == list(range(len(ROWS)))
    assert split.sizes() == {"train": 5, "fit": 2, "valid": 3, "holdout": 2}


def test_train_has_no_label_known_after_cutoff(split: Split) -> None:
    data = frame(ROWS)
    cutoff = pd.Timestamp(POLICY.cutoff)
    assert (data.loc[split.train, LABEL_TIME] <= cutoff).all()
    assert (data.loc[split.train, ORDER_TIME] < cutoff).all()
    late = (data[ORDER_TIME] < cutoff) & (data[LABEL_TIME] > cutoff)
    assert late.any() and not (split.train & late).any()


def test_fit_labels_are_known_by_validation_start(split: Split) -> None:
    data = frame(ROWS)
    vstart = pd.Timestamp(POLICY.validation_start)
    assert (data.loc[split.fit, LABEL_TIME] <= vstart).all()
    assert (data.loc[split.fit, ORDER_TIME] < vstart).all()
    assert rows_of(split.fit & ~split.train) == []  # fit is part of train


def test_holdout_is_disjoint_from_train_fit_and_valid(split: Split) -> None:
    for part in ("train", "fit", "valid"):
        assert not (getattr(split, part) & split.holdout).any()
    assert not (split.fit & split.valid).any()


@pytest.mark.parametrize(
    "order, in_holdout",
    [
        ("2016-06-30 23:59", False),
        ("2016-07-01 00:00", True),
        ("2016-08-31 00:00", True),
        ("2016-08-31 23:59:59", True),
        ("2016-09-01 00:00", False),
    ],
)
def test_holdout_window_is_inclusive_of_holdout_end(order: str, in_holdout: bool) -> None:
    rows: list[tuple[str | None, str | None]] = [*ROWS[:5], (order, "2016-12-31")]
    split = split_frame(frame(rows), POLICY)
    assert bool(split.holdout.iloc[-1]) is in_holdout


def test_holdout_labels_known_keeps_only_rows_labelled_by_holdout_end() -> None:
    rows: list[tuple[str | None, str | None]] = [
        *ROWS[:5],
        ("2016-08-01", "2016-08-31 12:00"),  # 5 known on the last holdout day
        ("2016-08-01", "2016-09-01"),  # 6 known the day after
    ]
    policy = POLICY.model_copy(update={"holdout_labels_known": True})
    assert rows_of(split_frame(frame(rows), policy).holdout) == [4, 5]
    assert rows_of(split_frame(frame(rows), POLICY).holdout) == [4, 5, 6]


@pytest.mark.parametrize(
    "rows, empty",
    [
        (ROWS[:4], "holdout"),  # nothing after the cutoff
        (ROWS[2:7], "fit"),  # nothing before validation_start
        ([ROWS[0], ROWS[4]], "valid"),  # nothing in the validation window
        ([ROWS[4], ROWS[5]], "train"),  # only holdout rows: train, fit and valid all empty
    ],
)
def test_empty_part_raises_naming_it(rows: list[tuple[str | None, str | None]], empty: str) -> None:
    with pytest.raises(SplitError, match=rf"split leaves \[[^]]*'{empty}'[^]]*\] empty") as info:
        split_frame(frame(rows), POLICY)
    assert "2016-07-01" in str(info.value)  # the policy's dates are in the message


def test_time_split_needs_time_columns() -> None:
    with pytest.raises(SplitError, match="needs the order and label time columns"):
        split_frame(pd.DataFrame({"x": [1]}), POLICY)
    with pytest.raises(SplitError, match="needs the order and label time columns"):
        split_frame(frame(ROWS).drop(columns=[LABEL_TIME]), POLICY)


# --- random split ----------------------------------------------------------------------------

RANDOM = SplitConfig(method="random", holdout_fraction=0.2, validation_fraction=0.1, seed=3)
DATA = pd.DataFrame({"x": range(2000)}, index=range(5000, 7000))


def test_random_split_is_deterministic_for_a_seed() -> None:
    a, b = split_frame(DATA, RANDOM), split_frame(DATA, RANDOM)
    for part in PARTS:
        assert getattr(a, part).equals(getattr(b, part))
    assert list(a.holdout.index) == list(DATA.index)


def test_random_split_depends_on_the_seed() -> None:
    a = split_frame(DATA, RANDOM)
    other = split_frame(DATA, RANDOM.model_copy(update={"seed": 4}))
    assert not other.holdout.equals(a.holdout)


def test_random_split_parts_and_fractions() -> None:
    s = split_frame(DATA, RANDOM)
    assert not (s.train & s.holdout).any()
    assert (s.train | s.holdout).all()  # every row is used
    assert not (s.fit & s.valid).any()
    assert (s.fit | s.valid).equals(s.train)
    sizes = s.sizes()
    assert 320 < sizes["holdout"] < 480  # 20 % of 2000 = 400
    assert 140 < sizes["valid"] < 260  # 10 % of 2000 = 200
    assert sizes["train"] == 2000 - sizes["holdout"]


def test_random_split_ignores_time_columns() -> None:
    data = frame(ROWS * 50)
    s = split_frame(data, RANDOM)
    assert s.holdout.sum() + s.train.sum() == len(data)
    rng = np.random.default_rng(RANDOM.seed)
    assert s.holdout.to_numpy().tolist() == (rng.random(len(data)) < 0.2).tolist()


def test_random_split_of_a_tiny_frame_names_the_empty_part() -> None:
    with pytest.raises(SplitError, match="empty"):
        split_frame(pd.DataFrame({"x": [1]}), RANDOM)


def test_no_holdout_keeps_every_other_part() -> None:
    """A refit's split: the same train, fit and valid rows, and no holdout (not an error)."""
    refit = split_frame(frame(ROWS), POLICY.model_copy(update={"no_holdout": True}))
    usual = split_frame(frame(ROWS), POLICY)
    assert not refit.holdout.any()
    for part in ("train", "fit", "valid"):
        assert rows_of(getattr(refit, part)) == rows_of(getattr(usual, part))


def test_no_holdout_needs_a_time_split() -> None:
    with pytest.raises(ValueError, match=r"no_holdout needs split\.method 'time'"):
        SplitConfig(method="random", no_holdout=True)
