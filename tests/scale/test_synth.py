"""The synthetic bookings: the real schema, realistic marginals, a learnable label, the suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from keel.config import EntityKeyConfig
from keel.synth import Synthesizer, fit_synthesizer, iter_synthetic, write_synthetic
from keel.table import add_entity_key, read_source
from keel.validation import load_suite, validate_frame

pytestmark = pytest.mark.slow  # fitting the generator's label model takes ~10 s on 2 cores
REPO = Path(__file__).resolve().parents[2]
ROWS = 60_000


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return read_source(REPO / "data/raw/hotel_bookings.csv.gz")


@pytest.fixture(scope="module")
def synth(real: pd.DataFrame) -> Synthesizer:
    return fit_synthesizer(real, seed=0)


@pytest.fixture(scope="module")
def fake(synth: Synthesizer, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    path = write_synthetic(
        synth, ROWS, tmp_path_factory.mktemp("synth") / "b.parquet", seed=1, chunk_rows=25_000
    )
    return read_source(path)


def test_schema_is_the_real_one(real: pd.DataFrame, fake: pd.DataFrame) -> None:
    assert len(fake) == ROWS
    assert list(fake.columns) == list(real.columns)
    assert fake.dtypes.astype(str).to_dict() == real.dtypes.astype(str).to_dict()


def test_generation_is_seeded_and_chunks_are_independent(synth: Synthesizer) -> None:
    first = pd.concat(iter_synthetic(synth, 3_000, seed=5, chunk_rows=1_000), ignore_index=True)
    again = pd.concat(iter_synthetic(synth, 3_000, seed=5, chunk_rows=1_000), ignore_index=True)
    other = pd.concat(iter_synthetic(synth, 3_000, seed=6, chunk_rows=1_000), ignore_index=True)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    # Rows are new combinations, not copies of real bookings.
    assert first.drop_duplicates().shape[0] > 0.95 * len(first)


@pytest.mark.parametrize(
    "column",
    [
        "hotel",
        "arrival_date_month",
        "arrival_date_year",
        "deposit_type",
        "market_segment",
        "customer_type",
        "meal",
        "reservation_status",
    ],
)
def test_category_shares_match(real: pd.DataFrame, fake: pd.DataFrame, column: str) -> None:
    expected = real[column].value_counts(normalize=True)
    observed = fake[column].value_counts(normalize=True).reindex(expected.index, fill_value=0)
    assert np.abs(observed - expected).max() < 0.01, (observed - expected).abs().max()


def test_numeric_marginals_and_label_rate_match(real: pd.DataFrame, fake: pd.DataFrame) -> None:
    assert abs(fake["is_canceled"].mean() - real["is_canceled"].mean()) < 0.01
    for column in ("lead_time", "adr", "stays_in_week_nights", "adults"):
        assert fake[column].mean() == pytest.approx(real[column].mean(), rel=0.03), column
        for q in (0.1, 0.5, 0.9):
            assert fake[column].quantile(q) == pytest.approx(
                real[column].quantile(q), rel=0.1, abs=1
            ), (column, q)
    assert fake["agent"].isna().mean() == pytest.approx(real["agent"].isna().mean(), abs=0.01)


def test_the_label_follows_the_real_structure(real: pd.DataFrame, fake: pd.DataFrame) -> None:
    # Joint structure that matters to a model: cancellation by deposit type and lead time.
    for frame in (real, fake):
        assert frame.loc[frame["deposit_type"] == "Non Refund", "is_canceled"].mean() > 0.9
    real_by = real.groupby(pd.qcut(real["lead_time"], 5, duplicates="drop"), observed=True)
    fake_by = fake.groupby(pd.cut(fake["lead_time"], real_by.groups.keys()), observed=True)
    assert np.allclose(
        real_by["is_canceled"].mean().to_numpy(),
        fake_by["is_canceled"].mean().to_numpy(),
        atol=0.04,
    )
    assert roc_auc_score(fake["is_canceled"], fake["lead_time"]) > 0.65
    # Seasonality of the label: the cancellation rate of each hotel and arrival month.
    cells = ["hotel", "arrival_date_year", "arrival_date_month"]
    rates = pd.concat(
        [real.groupby(cells)["is_canceled"].mean(), fake.groupby(cells)["is_canceled"].mean()],
        axis=1,
    )
    assert (rates.iloc[:, 0] - rates.iloc[:, 1]).abs().max() < 0.06
    # Outcome columns agree with the label, as in the real data.
    status = fake["reservation_status"]
    assert (status[fake["is_canceled"] == 0] == "Check-Out").all()
    assert status[fake["is_canceled"] == 1].isin(["Canceled", "No-Show"]).all()


def test_synthetic_bookings_pass_the_expectation_suite(fake: pd.DataFrame) -> None:
    keyed = add_entity_key(fake, EntityKeyConfig(method="content_hash", name="booking_id"))
    report = validate_frame(keyed, load_suite(REPO / "expectations/hotel_bookings.json"))
    assert report.success, report.message()
