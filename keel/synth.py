"""Synthetic hotel bookings at any scale, learned from the real ones.

This generator is specific to the hotel-bookings use case that ships with Keel (the engine
itself stays data-set agnostic): it exists so that every benchmark can run at 1M or 10M rows.
It produces the source schema exactly (same columns, same dtypes as `read_source` gives for
`data/raw/hotel_bookings.csv.gz`) and passes the shipped expectation suite.

How it is learned (`fit_synthesizer`), all from the real table:

- **Cells**: hotel x arrival year-month. The number of synthetic rows per cell follows the real
  share of the cell, so seasonality, the hotel mix and the 2015-2017 span (and with them the
  time split of `params.yaml`) are kept.
- **Blocks**: inside a cell, each synthetic row draws three blocks of columns from three
  independently chosen real rows of the same cell: the arrival day (year, month, week number,
  day), the booking channel (lead time, country, segment, channel, customer and deposit type,
  agent, company, history, changes, waiting list) and the stay (nights, party, meal, rooms,
  rate, parking, requests). Columns that belong together stay together; blocks recombine, so
  rows are new combinations rather than copies. Lead time and rate get a small multiplicative
  jitter, kept inside the real range.
- **Label**: a small XGBoost model of `is_canceled` given the non-leaking columns, fitted on
  the real rows, with a log-odds offset per cell so that each cell's synthetic cancellation
  rate is the real one; the synthetic label is a Bernoulli draw of that probability, so a
  model trained on synthetic data learns real structure instead of noise.
- **Outcome columns** follow the label as in the real data: `Check-Out` dated arrival + nights,
  `Canceled` dated between booking and arrival (the real distribution of that fraction), and
  `No-Show` (the real share of cancellations) dated on arrival.

Generation is seeded and chunked (`iter_synthetic`, `write_synthetic`): memory is bounded by
one chunk, so 10M rows stream to one parquet file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb

__all__ = [
    "LABEL_FEATURES",
    "Synthesizer",
    "fit_synthesizer",
    "generate",
    "iter_synthetic",
    "write_synthetic",
]

log = logging.getLogger(__name__)

MONTHS = [dt.date(2000, m, 1).strftime("%B") for m in range(1, 13)]
DATE_BLOCK = [
    "arrival_date_year",
    "arrival_date_month",
    "arrival_date_week_number",
    "arrival_date_day_of_month",
]
CHANNEL_BLOCK = [
    "lead_time",
    "country",
    "market_segment",
    "distribution_channel",
    "customer_type",
    "deposit_type",
    "agent",
    "company",
    "is_repeated_guest",
    "previous_cancellations",
    "previous_bookings_not_canceled",
    "booking_changes",
    "days_in_waiting_list",
]
STAY_BLOCK = [
    "stays_in_weekend_nights",
    "stays_in_week_nights",
    "adults",
    "children",
    "babies",
    "meal",
    "reserved_room_type",
    "assigned_room_type",
    "adr",
    "required_car_parking_spaces",
    "total_of_special_requests",
]
# What the label model may read: what is known when a booking is made (no leakage columns).
LABEL_FEATURES = [
    "hotel",
    "arrival_date_month",
    "arrival_date_week_number",
    "lead_time",
    "country",
    "market_segment",
    "distribution_channel",
    "customer_type",
    "deposit_type",
    "agent",
    "company",
    "is_repeated_guest",
    "previous_cancellations",
    "previous_bookings_not_canceled",
    "stays_in_weekend_nights",
    "stays_in_week_nights",
    "adults",
    "children",
    "babies",
    "meal",
    "reserved_room_type",
    "adr",
    "required_car_parking_spaces",
    "total_of_special_requests",
]
_LABEL_PARAMS = {
    "objective": "binary:logistic",
    "tree_method": "hist",
    "max_depth": 5,
    "eta": 0.15,
    "min_child_weight": 5,
    "nthread": 0,
}
_LABEL_ROUNDS = 60
_JITTER = 0.08  # log-scale sd of the lead-time and rate jitter
_JITTERED = ("lead_time", "adr")
_CALIBRATION_ROWS = 200_000


@dataclasses.dataclass(frozen=True)
class Synthesizer:
    """What `fit_synthesizer` learned from the real table.

    Attributes:
        columns: The source columns in order, with their dtypes.
        cells: The hotel and the real rows (positions) of each (hotel, year, month) cell.
        shares: Each cell's share of the real rows.
        blocks: The real values of each block of columns (the pools blocks are drawn from).
        bounds: The real range of each jittered column.
        label_model: P(cancelled | non-leaking columns), fitted on the real rows.
        offsets: Per cell, the log-odds shift that makes the synthetic cancellation rate of
            the cell the real one (recombined blocks shift it a little).
        categories: The category lists the label model was fitted with.
        cancel_fractions: For real cancellations, (status date - booking date) / lead time.
        no_show_share: The share of no-shows among real cancellations.
    """

    columns: dict[str, str]
    cells: list[tuple[str, np.ndarray]]
    shares: np.ndarray
    blocks: list[pd.DataFrame]
    bounds: dict[str, tuple[float, float]]
    label_model: xgb.Booster
    offsets: np.ndarray
    categories: dict[str, list[str]]
    cancel_fractions: np.ndarray
    no_show_share: float


def _arrival(frame: pd.DataFrame) -> pd.Series:
    month = frame["arrival_date_month"].map({m: i for i, m in enumerate(MONTHS, 1)})
    return pd.to_datetime(
        pd.DataFrame(
            {
                "year": frame["arrival_date_year"],
                "month": month,
                "day": frame["arrival_date_day_of_month"],
            }
        )
    )


def _label_matrix(frame: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    out = frame[LABEL_FEATURES].copy()
    for col, cats in categories.items():
        out[col] = pd.Categorical(out[col].astype("string"), categories=cats)
    return out


def fit_synthesizer(real: pd.DataFrame, seed: int = 0) -> Synthesizer:
    """Learn cells, blocks, the label model and the outcome timing from the real bookings.

    Args:
        real: The real source table (as `keel.table.read_source` reads it).
        seed: Seed of the label model.

    Returns:
        The fitted synthesizer.
    """
    real = real.reset_index(drop=True)
    groups = real.groupby(["hotel", "arrival_date_year", "arrival_date_month"], sort=True).indices
    cells = [(str(hotel), np.asarray(idx)) for (hotel, _, _), idx in groups.items()]
    shares = np.array([len(pool) for _, pool in cells], dtype="float64") / len(real)
    categories = {
        col: sorted(real[col].dropna().astype("string").unique().tolist())
        for col in LABEL_FEATURES
        if not pd.api.types.is_numeric_dtype(real[col])
    }
    matrix = xgb.DMatrix(
        _label_matrix(real, categories), label=real["is_canceled"], enable_categorical=True
    )
    model = xgb.train({**_LABEL_PARAMS, "seed": seed}, matrix, num_boost_round=_LABEL_ROUNDS)
    cancelled = real[real["is_canceled"] == 1]
    arrival = _arrival(cancelled)
    booked = arrival - pd.to_timedelta(cancelled["lead_time"], unit="D")
    status = pd.to_datetime(cancelled["reservation_status_date"])
    lead = cancelled["lead_time"].clip(lower=1).to_numpy(dtype="float64")
    fractions = np.clip((status - booked).dt.days.to_numpy(dtype="float64") / lead, 0.0, 1.0)
    no_show = float((cancelled["reservation_status"] == "No-Show").mean())
    synth = Synthesizer(
        columns={c: str(t) for c, t in real.dtypes.items()},
        cells=cells,
        shares=shares,
        blocks=[real[block] for block in (DATE_BLOCK, CHANNEL_BLOCK, STAY_BLOCK)],
        bounds={col: (float(real[col].min()), float(real[col].max())) for col in _JITTERED},
        label_model=model,
        offsets=np.zeros(len(cells)),
        categories=categories,
        cancel_fractions=fractions,
        no_show_share=no_show,
    )
    targets = np.array([real["is_canceled"].to_numpy()[pool].mean() for _, pool in cells])
    return dataclasses.replace(synth, offsets=_calibrate(synth, targets, seed))


def _calibrate(synth: Synthesizer, targets: np.ndarray, seed: int) -> np.ndarray:
    """Per-cell log-odds offsets so that each cell's mean probability is its real rate."""
    frame, cell = _draw(synth, _CALIBRATION_ROWS, np.random.default_rng([seed, 1 << 30]))
    margin = _margins(synth, frame)
    offsets = np.zeros(len(targets))
    for _ in range(20):  # Newton steps on mean(sigmoid(margin + b)) = target, per cell
        p = _sigmoid(margin + offsets[cell])
        mean = np.bincount(cell, p, len(targets)) / np.maximum(
            np.bincount(cell, None, len(targets)), 1
        )
        slope = np.bincount(cell, p * (1 - p), len(targets)) / np.maximum(
            np.bincount(cell, None, len(targets)), 1
        )
        offsets -= (mean - targets) / np.maximum(slope, 1e-6)
    return offsets


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _margins(synth: Synthesizer, frame: pd.DataFrame) -> np.ndarray:
    matrix = xgb.DMatrix(_label_matrix(frame, synth.categories), enable_categorical=True)
    out: np.ndarray = synth.label_model.predict(matrix, output_margin=True)
    return out


def _jitter(values: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    noisy: np.ndarray = np.clip(values * np.exp(rng.normal(0.0, _JITTER, len(values))), low, high)
    return noisy


def _draw(
    synth: Synthesizer, rows: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows drawn block by block within cells, jittered; and the cell of each row."""
    counts = rng.multinomial(rows, synth.shares)
    parts = []
    for (hotel, pool), n in zip(synth.cells, counts, strict=True):
        if n == 0:
            continue
        picked = [
            block.take(pool[rng.integers(0, len(pool), n)]).reset_index(drop=True)
            for block in synth.blocks
        ]
        parts.append(pd.concat([pd.DataFrame({"hotel": [hotel] * n}), *picked], axis=1))
    # Cells come out grouped: shuffle, as a real extract mixes hotels and months.
    order = rng.permutation(rows)
    frame = pd.concat(parts, ignore_index=True).take(order).reset_index(drop=True)
    cell = np.repeat(np.arange(len(counts)), counts)[order]
    lead = _jitter(frame["lead_time"].to_numpy(dtype="float64"), rng, *synth.bounds["lead_time"])
    frame["lead_time"] = np.rint(lead).astype("int64")
    adr = _jitter(frame["adr"].to_numpy(dtype="float64"), rng, *synth.bounds["adr"])
    frame["adr"] = np.round(adr, 2)
    return frame, cell


def _outcomes(
    synth: Synthesizer, frame: pd.DataFrame, cancelled: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    arrival = _arrival(frame)
    nights = (frame["stays_in_weekend_nights"] + frame["stays_in_week_nights"]).to_numpy()
    lead = frame["lead_time"].to_numpy(dtype="int64")
    fraction = synth.cancel_fractions[rng.integers(0, len(synth.cancel_fractions), len(frame))]
    no_show = rng.random(len(frame)) < synth.no_show_share
    days_after_booking = np.floor(fraction * lead).astype("int64")
    offset = np.where(
        cancelled,
        np.where(no_show, 0, days_after_booking - lead),  # relative to arrival
        nights,
    )
    status_date = (arrival + pd.to_timedelta(offset, unit="D")).dt.strftime("%Y-%m-%d")
    status = np.where(cancelled, np.where(no_show, "No-Show", "Canceled"), "Check-Out")
    return status, status_date.to_numpy()


def generate(synth: Synthesizer, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """One chunk of synthetic bookings with the source schema.

    Args:
        synth: The fitted synthesizer.
        rows: How many rows.
        rng: The random generator (seeded by the caller).

    Returns:
        `rows` bookings, columns and dtypes as in the real table.
    """
    frame, cell = _draw(synth, rows, rng)
    probability = _sigmoid(_margins(synth, frame) + synth.offsets[cell])
    cancelled = rng.random(rows) < probability
    frame["is_canceled"] = cancelled.astype("int64")
    frame["reservation_status"], frame["reservation_status_date"] = _outcomes(
        synth, frame, cancelled, rng
    )
    out = frame[list(synth.columns)]
    return out.astype(synth.columns)


def iter_synthetic(
    synth: Synthesizer, rows: int, *, seed: int = 0, chunk_rows: int = 500_000
) -> Iterator[pd.DataFrame]:
    """Consecutive seeded chunks of at most `chunk_rows` rows, `rows` in all.

    Chunk `i` uses the seed sequence `(seed, i)`, so a chunk does not depend on the others.
    """
    for number, start in enumerate(range(0, rows, chunk_rows)):
        rng = np.random.default_rng([seed, number])
        yield generate(synth, min(chunk_rows, rows - start), rng)


def write_synthetic(
    synth: Synthesizer, rows: int, path: Path, *, seed: int = 0, chunk_rows: int = 500_000
) -> Path:
    """Write `rows` synthetic bookings to one parquet file, chunk by chunk (bounded memory).

    Args:
        synth: The fitted synthesizer.
        rows: How many rows in all.
        path: The parquet file to write (its folder is created; written atomically).
        seed: The seed.
        chunk_rows: Rows per chunk (and per parquet row group).

    Returns:
        The path written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    writer: pq.ParquetWriter | None = None
    written = 0
    try:
        for chunk in iter_synthetic(synth, rows, seed=seed, chunk_rows=chunk_rows):
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(partial, table.schema)
            writer.write_table(table)
            written += len(chunk)
            log.info("synthetic bookings: %d of %d rows written", written, rows)
    finally:
        if writer is not None:
            writer.close()
    partial.replace(path)
    return path
