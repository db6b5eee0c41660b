"""Scoring and prediction-store write throughput against their bare baselines.

    .venv/bin/python benchmarks/scoring.py --rows 1000000

The model is the shipped one: `params.yaml` as it is, trained on the real bookings (cached in
`.keel/bench/shipped/`, or `--model-dir`). The records are synthetic bookings
(`keel/synth.py`). Reports, each as the median of `--repeats` runs:

- the `score` path (`keel.scoring.iter_scored`, streamed in `score.chunk_rows` chunks as the
  flow does: features from raw records, prediction, decision, reason codes) in rows/s against
  bare `inplace_predict` on the same model and features built beforehand; once per reason-code
  configuration: `score.reason_codes: 0` (no reasons), `reason_method: approx` and the shipped
  exact TreeSHAP (on `--shap-rows`, it is slow);
- the score path's peak memory growth (outcome history of the whole batch, then the stream);
- the prediction-store write (`keel.store.write_batch`) in rows/s against the raw driver path
  on the same rows: sqlite3 `executemany` in one transaction, and PostgreSQL `COPY`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import yaml
from common import (
    PG_ADMIN,
    REPO,
    SOURCE,
    Ratio,
    paired,
    read_bookings,
    with_outcome_history,
    with_times,
)
from sqlalchemy import Engine

from keel.config import load_params
from keel.db import open_database
from keel.features import build_features
from keel.model import ModelBundle, load_bundle
from keel.scoring import iter_scored, score_records
from keel.store import PREDICTION_COLUMNS, ScoreBatch, _rows, write_batch

BENCH_STATE = REPO / ".keel/bench"
SCORE_TARGET = 0.5
SQLITE_TARGET = 0.4
POSTGRES_TARGET = 0.5


def shipped_model() -> Path:
    """The model `params.yaml` trains on the real bookings, trained once into .keel/bench/."""
    from tasks import stages

    root = BENCH_STATE / "shipped"
    params_text = (REPO / "params.yaml").read_text()
    model_dir = root / "models/model"
    if (model_dir / "model.ubj").is_file() and _trains_alike(root / "params.yaml", params_text):
        return model_dir
    print("training the shipped model on the real bookings ...", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    (root / "data/raw").mkdir(parents=True)
    shutil.copy(SOURCE, root / "data/raw" / SOURCE.name)
    shutil.copytree(REPO / "expectations", root / "expectations")
    (root / "params.yaml").write_text(params_text)
    params = load_params(root / "params.yaml")
    for stage in ("ingest", "validate", "featurize", "train"):
        getattr(stages, stage).fn(root, params)
    return model_dir


def _trains_alike(cached: Path, params_text: str) -> bool:
    """Whether the cached model was trained with the same data, featurize and train params."""
    if not cached.is_file():
        return False
    sections = ("data", "ingest", "featurize", "train")
    old, new = yaml.safe_load(cached.read_text()), yaml.safe_load(params_text)
    return all(old.get(k) == new.get(k) for k in sections)


def _stream(bundle: ModelBundle, records: pd.DataFrame, chunk_rows: int, **options: object) -> int:
    """The score path as the flow runs it: chunk by chunk, each chunk's frame let go."""
    rows = 0
    for part in iter_scored(bundle, records, threshold=0.5, chunk_rows=chunk_rows, **options):  # type: ignore[arg-type]
        rows += len(part)
    return rows


def bench_scoring(
    bundle: ModelBundle,
    records: pd.DataFrame,
    *,
    chunk_rows: int,
    approx_rows: int,
    shap_rows: int,
    repeats: int,
) -> tuple[list[Ratio], dict[str, object]]:
    """rows/s of the score path in three reason-code configurations vs bare inplace_predict.

    Each repetition times the score path and then bare `inplace_predict` on the same rows.
    `score.reason_codes: 0` runs on every row `repeats` times; the two reason-code settings,
    which cost 10 to 200 times more, once on the first `approx_rows` / `shap_rows` rows.
    """
    # The bare side gets every feature prebuilt, the outcome history included; the score path
    # computes the history itself (from the batch's own known outcomes), as the flow does.
    features = build_features(with_outcome_history(records, bundle.spec.history), bundle.spec)
    booster = bundle.booster
    booster.set_param({"device": "cpu"})
    configs = [
        ("no reason codes (score.reason_codes: 0)", len(records), {"reason_codes": 0}, repeats),
        (
            "3 approx reason codes (reason_method: approx)",
            approx_rows,
            {"reason_codes": 3, "reason_method": "approx"},
            1,
        ),
        (
            "3 exact SHAP reason codes (shipped default)",
            shap_rows,
            {"reason_codes": 3, "reason_method": "shap"},
            1,
        ),
    ]
    out = []
    for label, n, options, reps in configs:
        rows, matrix = records.head(n), features.head(n)
        times = paired(
            lambda r=rows, o=options: _stream(
                bundle, with_outcome_history(r, bundle.spec.history), chunk_rows, **o
            ),
            lambda m=matrix: booster.inplace_predict(m),
            reps,
        )
        out.append(
            Ratio(
                name=f"scoring, {label.split(' (')[0]}",
                ratio=1 / times.time_ratio(),  # rows/s over rows/s
                target=SCORE_TARGET,
                kind="min",
                keel=f"{len(rows) / times.keel_s:,.0f} rows/s",
                bare=f"{len(rows) / times.bare_s:,.0f} rows/s",
                config=f"{label}; {len(rows):,} synthetic rows, chunks of {chunk_rows:,}, "
                f"reasons as the scoring function returns them (their JSON text is the "
                f"spool's and the write's); shipped model ({booster.num_boosted_rounds()} trees)",
                details={**times.details(), "rows": len(rows)},
            )
        )
    # Memory: the score path alone (history and stream, no reasons), not the bare side's.
    growth_mb = _peak_growth_mb(
        lambda: _stream(
            bundle, with_outcome_history(records, bundle.spec.history), chunk_rows, reason_codes=0
        )
    )
    return out, {"streamed_scoring_peak_rss_growth_mb": growth_mb}


def _peak_growth_mb(run: Any) -> float | None:
    """How far the process's peak RSS rose above its RSS while `run()` ran, in MB.

    Linux resets the peak (VmHWM) on `echo 5 > /proc/self/clear_refs`; without that (another
    OS, no permission) the figure is not measurable here and is None.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = _status_kb("VmRSS")
    run()
    return round((_status_kb("VmHWM") - before) / 1024, 1)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _predictions(scored: pd.DataFrame, batch: str) -> pd.DataFrame:
    now = dt.datetime.now(dt.UTC)
    return pd.DataFrame(
        {
            "batch_id": batch,
            "entity_key": [f"k{i}" for i in range(len(scored))],
            "as_of": now,
            "model_name": "bench",
            "model_version": 1,
            "score": scored["score"].to_numpy(),
            "decision": scored["decision"].to_numpy(),
            # As the flow spools them: JSON text.
            "reasons": [json.dumps(r, separators=(",", ":")) for r in scored["reasons"]],
            "scored_at": now,
        }
    )


def _write_once(engine: Engine, frame: pd.DataFrame, raw: str) -> tuple[float, float]:
    batch_id = str(uuid.uuid4())
    frame = frame.assign(batch_id=batch_id)
    row = ScoreBatch(
        batch_id=batch_id,
        model_name="bench",
        model_version=1,
        as_of=dt.datetime.now(dt.UTC),
        rows=len(frame),
        quarantined=0,
    )
    start = time.perf_counter()
    with engine.begin() as connection:
        write_batch(connection, row, frame)
    keel_s = time.perf_counter() - start
    raw_id = f"raw-{batch_id}"
    rows = _rows(frame.assign(batch_id=raw_id), engine.dialect.name)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO score_batches (batch_id, model_name, model_version, as_of, rows, "
            f"quarantined, created_at) VALUES ('{raw_id}', 'bench', 1, '2016-01-01', 0, 0, "
            "'2016-01-01')"
        )
    columns = ", ".join(PREDICTION_COLUMNS)
    start = time.perf_counter()
    if raw == "sqlite":
        conn = sqlite3.connect(str(engine.url.database))
        marks = ", ".join("?" for _ in PREDICTION_COLUMNS)
        with conn:
            conn.executemany(f"INSERT INTO predictions ({columns}) VALUES ({marks})", rows)
        conn.close()
    else:
        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with (
            psycopg.connect(dsn) as conn,
            conn.cursor() as cur,
            cur.copy(f"COPY predictions ({columns}) FROM STDIN") as copy,
        ):
            for r in rows:
                copy.write_row(r)
    return keel_s, time.perf_counter() - start


def bench_write(
    url: str, frame: pd.DataFrame, raw: str, repeats: int
) -> tuple[float, float, float]:
    """Median rows/s of write_batch and of the raw driver path (a fresh batch each time), and
    the median over the repetitions of their ratio (each repetition writes both)."""
    engine = open_database(url)
    try:
        times = [_write_once(engine, frame, raw) for _ in range(repeats)]
    finally:
        engine.dispose()
    keel_s = float(np.median([t[0] for t in times]))
    raw_s = float(np.median([t[1] for t in times]))
    ratio = float(np.median([r / k for k, r in times]))
    return len(frame) / keel_s, len(frame) / raw_s, ratio


def _write_ratio(
    name: str, keel_rps: float, raw_rps: float, ratio: float, target: float, raw: str, n: int
) -> Ratio:
    return Ratio(
        name=name,
        ratio=ratio,
        target=target,
        kind="min",
        keel=f"{keel_rps:,.0f} rows/s",
        bare=f"{raw_rps:,.0f} rows/s",
        config=f"{n:,} predictions with 3 reason codes (JSON); raw: {raw} on the same rows",
    )


def bench_writes(
    bundle: ModelBundle, records: pd.DataFrame, rows: int, repeats: int
) -> list[Ratio]:
    """SQLite and PostgreSQL write ratios on `rows` scored predictions."""
    batch = with_outcome_history(records.head(rows), bundle.spec.history)
    scored = score_records(bundle, batch, threshold=0.5, reason_method="approx")
    frame = _predictions(scored, "bench")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        keel_rps, raw_rps, ratio = bench_write(
            f"sqlite:///{tmp}/bench.db", frame, "sqlite", repeats
        )
    out.append(
        _write_ratio(
            "write, SQLite",
            keel_rps,
            raw_rps,
            ratio,
            SQLITE_TARGET,
            "executemany, 1 transaction",
            rows,
        )
    )
    name = f"keel_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        keel_rps, raw_rps, ratio = bench_write(
            f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", frame, "postgresql", repeats
        )
        out.append(
            _write_ratio(
                "write, PostgreSQL", keel_rps, raw_rps, ratio, POSTGRES_TARGET, "COPY", rows
            )
        )
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return out


def run(
    rows: int,
    repeats: int,
    model_dir: Path | None,
    *,
    approx_rows: int = 200_000,
    shap_rows: int = 20_000,
    write_rows: int = 200_000,
    chunk_rows: int = 50_000,
) -> tuple[list[Ratio], dict[str, object]]:
    """All scoring and write ratios."""
    bundle = load_bundle(model_dir or shipped_model())
    records = with_times(read_bookings(rows))  # the feed arrives with its time columns
    ratios, extra = bench_scoring(
        bundle,
        records,
        chunk_rows=chunk_rows,
        approx_rows=approx_rows,
        shap_rows=shap_rows,
        repeats=repeats,
    )
    ratios += bench_writes(bundle, records, write_rows, repeats)
    return ratios, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--write-rows", type=int, default=200_000)
    parser.add_argument("--approx-rows", type=int, default=200_000, help="rows, approx reasons")
    parser.add_argument("--shap-rows", type=int, default=20_000, help="rows for exact SHAP")
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()
    ratios, extra = run(
        args.rows,
        args.repeats,
        args.model_dir,
        approx_rows=args.approx_rows,
        shap_rows=args.shap_rows,
        write_rows=args.write_rows,
        chunk_rows=args.chunk_rows,
    )
    for ratio in ratios:
        print(ratio.line(), f"({ratio.keel} vs {ratio.bare})")
    print(json.dumps(extra))


if __name__ == "__main__":
    main()
