"""Orchestration overhead and the end-to-end pipeline, on 1M synthetic bookings.

    .venv/bin/python benchmarks/orchestration.py --rows 1000000

- **Ephemeral server cold start**: the seconds Prefect's temporary local server needs before
  it answers (what `keel train` pays without `PREFECT_API_URL`), reported on its own.
- **Orchestration overhead**: the training flow (`flows.train.train_flow`, every stage forced,
  then register -> gate -> promote) runs against that server, already up; the overhead is the
  flow's wall time minus the time spent inside task bodies (the union of the task runs'
  start-end intervals, read back from Prefect's API), divided by the bare training time: the
  same two `xgb.train` calls (early-stopped fit, refit) on the same matrices and parameters.
- **End to end**: the flow's wall time divided by the sum of the bare stages: read the parquet
  and hash the rows (a key), the vectorized check of the suite (`validation.bare_check`), the
  time split and the feature matrix in pandas, the two `xgb.train` calls, then scoring the
  holdout with its AUC per hotel and saving the model.

The project is `params.yaml` with the synthetic parquet as its source, a lighter training
budget (`BENCH_TRAIN` below: eta 0.1, at most 200 rounds, early stopping after 20) so that
`make bench` fits in 20 minutes on 2 cores, and no outcome-history features (the bare
pipeline has no equivalent of them, so both sides build the same matrix); everything else is
as shipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from common import REPO, Ratio, synthetic_bookings
from sklearn.metrics import roc_auc_score
from validation import bare_check

from keel.config import Params, load_params
from keel.model import booster_params, resolve_device
from keel.validation import load_suite

BENCH_TRAIN = {"num_boost_round": 200, "early_stopping_rounds": 20, "xgboost": {"eta": 0.1}}
OVERHEAD_TARGET = 0.15
E2E_TARGET = 1.5


def make_project(root: Path, rows: int) -> Path:
    """A Keel project on `rows` synthetic bookings with the bench training budget."""
    (root / "data/raw").mkdir(parents=True)
    shutil.copy(synthetic_bookings(rows), root / "data/raw/bookings.parquet")
    shutil.copytree(REPO / "expectations", root / "expectations")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["source"] = "data/raw/bookings.parquet"
    params["train"].update({k: v for k, v in BENCH_TRAIN.items() if k != "xgboost"})
    params["train"]["xgboost"].update(BENCH_TRAIN["xgboost"])
    params["gate"]["model_name"] = "bench"
    # The bare pipeline has no hand-written equivalent of the outcome-history features, so
    # both sides build the same matrix: the shipped features without them.
    params["featurize"]["history"]["columns"] = []
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def cold_start() -> tuple[float, Any]:
    """Start Prefect's ephemeral server; the seconds until it answers, and the server."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    start = time.perf_counter()
    server.start(timeout=120)
    return time.perf_counter() - start, server


def _task_body_seconds(flow_run_id: Any) -> float:
    """The union of the flow run's task-run intervals: time spent inside task bodies."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
        )
    spans = sorted(
        (r.start_time.timestamp(), r.end_time.timestamp())
        for r in runs
        if r.start_time and r.end_time
    )
    total, end = 0.0, float("-inf")
    for lo, hi in spans:
        if hi <= end:
            continue
        total += hi - max(lo, end)
        end = hi
    return total


def flow_once(root: Path, rep: int) -> tuple[float, float]:
    """One forced training flow on a fresh registry and cache: (wall s, task-body s)."""
    from flows.train import train_flow

    # A new registry database per repetition, so each one registers, gates and promotes, and
    # a new cache folder, so each one validates (Keel reuses the validation of a table and
    # suite it has seen: a new day's data never benefits from that).
    os.environ["KEEL_DATABASE_URL"] = f"sqlite:///{root / '.keel' / f'registry-{rep}.db'}"
    os.environ["KEEL_CACHE_DIR"] = str(root / ".keel" / f"cache-{rep}")
    start = time.perf_counter()
    state = train_flow(root=str(root), force=True, return_state=True)
    wall = time.perf_counter() - start
    if not state.is_completed():
        raise SystemExit(f"the training flow did not complete: {state}")
    bodies = _task_body_seconds(state.state_details.flow_run_id)
    rounds = json.loads((root / "models/model/metadata.json").read_text())["rounds"]
    print(
        f"training flow: {rounds} rounds; wall {wall:.2f} s, task bodies {bodies:.2f} s", flush=True
    )
    return wall, bodies


MONTHS = {
    m: i for i, m in enumerate(pd.date_range("2000-01-01", periods=12, freq="MS").month_name(), 1)
}


def _bare_features(frame: pd.DataFrame, params: Params) -> dict[str, Any]:
    """The time split and the model matrices, as a hand-written pandas script would do it."""
    arrival = pd.to_datetime(
        pd.DataFrame(
            {
                "year": frame["arrival_date_year"],
                "month": frame["arrival_date_month"].map(MONTHS),
                "day": frame["arrival_date_day_of_month"],
            }
        )
    )
    known = pd.to_datetime(frame["reservation_status_date"])
    split = params.featurize.split
    cutoff, vstart = pd.Timestamp(split.cutoff), pd.Timestamp(split.validation_start)
    end = pd.Timestamp(split.holdout_end) + pd.Timedelta(days=1)
    masks = {
        "train": (arrival < cutoff) & (known <= cutoff),
        "fit": (arrival < vstart) & (known <= vstart),
        "valid": (arrival >= vstart) & (arrival < cutoff),
        "holdout": (arrival >= cutoff) & (arrival < end),
    }
    feat = params.featurize
    x = frame[feat.numeric].astype("float64")
    for col in feat.categorical:
        text = frame[col].astype("string")
        cats = sorted(text[masks["train"]].dropna().unique())
        x[col] = pd.Categorical(text.where(text.isin(cats)), categories=cats)
    half_life = params.train.recency_half_life_days or 1e9
    out: dict[str, Any] = {"y": frame[params.data.target], "x": x, "hotel": frame["hotel"]}
    for part, mask in masks.items():
        out[part] = mask.to_numpy()
    for part, ref in (("fit", vstart), ("train", cutoff)):
        age = (ref - arrival[out[part]]).dt.days.clip(lower=0).to_numpy("float64")
        out[f"w_{part}"] = np.power(0.5, age / half_life)
    return out


def _bare_train(m: dict[str, Any], params: Params) -> Any:
    import xgboost as xgb  # here, after `common` has set OMP_WAIT_POLICY

    config = params.train
    xgb_params = booster_params(params.data, config, resolve_device(config.device))
    x, y = m["x"], m["y"]
    dfit = xgb.QuantileDMatrix(x[m["fit"]], y[m["fit"]], weight=m["w_fit"], enable_categorical=True)
    dvalid = xgb.QuantileDMatrix(x[m["valid"]], y[m["valid"]], ref=dfit, enable_categorical=True)
    booster = xgb.train(
        xgb_params,
        dfit,
        config.num_boost_round,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=config.early_stopping_rounds,
        verbose_eval=False,
    )
    rounds = booster.best_iteration + 1
    m["rounds"] = rounds
    dfull = xgb.QuantileDMatrix(
        x[m["train"]], y[m["train"]], weight=m["w_train"], enable_categorical=True
    )
    return xgb.train(xgb_params, dfull, rounds, verbose_eval=False)


def bare_once(root: Path, params: Params, suite: dict[str, Any]) -> dict[str, float]:
    """The bare stages once, each timed."""
    times: dict[str, float] = {}
    start = time.perf_counter()
    frame = pd.read_parquet(root / params.ingest.source)
    digest = pd.util.hash_pandas_object(frame, index=False)
    occurrence = digest.groupby(digest).cumcount()  # identical rows are distinct bookings
    frame.insert(0, "booking_id", digest.astype(str) + "-" + occurrence.astype(str))
    times["ingest"] = time.perf_counter() - start
    start = time.perf_counter()
    if not all(bare_check(frame, suite)):
        raise SystemExit("the bare check failed on the synthetic bookings")
    times["validate"] = time.perf_counter() - start
    start = time.perf_counter()
    matrices = _bare_features(frame, params)
    times["featurize"] = time.perf_counter() - start
    start = time.perf_counter()
    booster = _bare_train(matrices, params)
    times["train"] = time.perf_counter() - start
    start = time.perf_counter()
    hold = matrices["holdout"]
    score = booster.inplace_predict(matrices["x"][hold])
    y, hotel = matrices["y"][hold].to_numpy(), matrices["hotel"][hold].to_numpy()
    [roc_auc_score(y[hotel == h], score[hotel == h]) for h in np.unique(hotel)]
    roc_auc_score(y, score)
    with tempfile.TemporaryDirectory() as tmp:
        booster.save_model(str(Path(tmp) / "model.ubj"))
    times["evaluate"] = time.perf_counter() - start
    rounded = {k: round(v, 2) for k, v in times.items()}
    print(f"bare pipeline: {matrices['rounds']} rounds; stages {rounded}", flush=True)
    return times


def run(rows: int, repeats: int) -> list[Ratio]:
    """Cold start (info), orchestration overhead and end to end."""
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with tempfile.TemporaryDirectory(prefix="keel-orch-bench-") as tmp:
        root = make_project(Path(tmp) / "project", rows)
        params = load_params(root / "params.yaml")
        suite = load_suite(root / params.validate_.suite)
        start_s, server = cold_start()
        bares, flows = [], []
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                # Interleaved (bare, flow, bare, flow, ...): a change of load hits both alike.
                for rep in range(repeats):
                    bares.append(bare_once(root, params, suite))
                    flows.append(flow_once(root, rep))
                APILogHandler().flush()  # before the server goes away
        finally:
            server.stop()
            os.environ.pop("KEEL_DATABASE_URL", None)
            os.environ.pop("KEEL_CACHE_DIR", None)
    walls = [w for w, _ in flows]
    overheads = [w - b for w, b in flows]
    trains = [b["train"] for b in bares]
    totals = [sum(b.values()) for b in bares]
    train_s, bare_total = statistics.median(trains), statistics.median(totals)
    overhead, wall = statistics.median(overheads), statistics.median(walls)
    # Ratios: the median over the repetitions of each (flow, bare) pair's ratio.
    overhead_ratio = statistics.median(o / t for o, t in zip(overheads, trains, strict=True))
    e2e_ratio = statistics.median(w / t for w, t in zip(walls, totals, strict=True))
    config = (
        f"training flow, every stage forced, {rows:,} synthetic rows; train budget {BENCH_TRAIN}"
    )
    return [
        Ratio(
            name="Prefect ephemeral server cold start (s)",
            ratio=start_s,
            target=None,
            kind="max",
            keel=f"{start_s:.1f} s",
            bare="-",
            config="SubprocessASGIServer start until it answers (keel train w/o PREFECT_API_URL)",
        ),
        Ratio(
            name="orchestration: overhead / bare training",
            ratio=overhead_ratio,
            target=OVERHEAD_TARGET,
            kind="max",
            keel=f"{overhead:.2f} s overhead (flow {wall:.1f} s)",
            bare=f"{train_s:.1f} s training",
            config=config + "; server already running",
            details={"flow_wall_s": walls, "task_bodies_s": [b for _, b in flows]},
        ),
        Ratio(
            name="end to end: pipeline / sum of bare stages",
            ratio=e2e_ratio,
            target=E2E_TARGET,
            kind="max",
            keel=f"{wall:.1f} s",
            bare=f"{bare_total:.1f} s",
            config=config,
            details={"bare_stages_s": bares},
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for ratio in run(args.rows, args.repeats):
        print(ratio.line(), f"({ratio.keel} vs {ratio.bare})")


if __name__ == "__main__":
    main()
