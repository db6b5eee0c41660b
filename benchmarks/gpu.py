"""GPU against CPU: XGBoost training at 1M and 10M rows, and SHAP contributions.

    make bench-gpu                     # = python benchmarks/gpu.py
    python benchmarks/gpu.py --data data/synth/bookings_10m.parquet   # `keel synth` output

Standalone on purpose: it needs only xgboost, numpy and pandas (and pyarrow with `--data`), so
it runs on a rented GPU machine without the rest of Keel. It exits with a message, and status
3, when no CUDA GPU is usable.

The data is hotel-like: the shipped feature set (16 numbers, 9 categories with the real
cardinalities), either generated here (seeded; a logistic label of a few features, so the trees
have something to learn) or read from a `keel synth` parquet. Both devices get the same
matrices and the same parameters (`PARAMS`, a fixed number of rounds without early stopping,
so both do the same work); training time excludes building the matrix (reported apart), and
the GPU is warmed up first (CUDA context, reported apart). SHAP contributions are timed on the
same model on `--shap-rows` rows. Prints a table and writes `reports/bench/gpu.json` with the
CPU model, its core count, the GPU model (`nvidia-smi`), the date and every time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

NUMERIC = [
    "lead_time",
    "arrival_date_week_number",
    "arrival_date_day_of_month",
    "stays_in_weekend_nights",
    "stays_in_week_nights",
    "adults",
    "children",
    "babies",
    "is_repeated_guest",
    "previous_cancellations",
    "previous_bookings_not_canceled",
    "agent",
    "company",
    "adr",
    "required_car_parking_spaces",
    "total_of_special_requests",
]
CATEGORICAL = {  # name -> number of categories in the real bookings
    "hotel": 2,
    "arrival_date_month": 12,
    "meal": 5,
    "country": 177,
    "market_segment": 8,
    "distribution_channel": 5,
    "reserved_room_type": 10,
    "deposit_type": 3,
    "customer_type": 4,
}
TARGET = "is_canceled"
PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": "auc",
    "tree_method": "hist",
    "max_depth": 8,
    "eta": 0.1,
    "max_bin": 256,
    "seed": 0,
}
TARGETS = {1_000_000: 1.2, 10_000_000: 4.0}  # training speed-up the issue asks for
OUT = Path(__file__).resolve().parents[1] / "reports/bench/gpu.json"


def cuda_usable() -> str | None:
    """Why no CUDA GPU is usable, or None when one is (XGBoost falls back to the CPU silently,
    so the device it really used is read back)."""
    if not xgb.build_info().get("USE_CUDA", False):
        return "this XGBoost build has no CUDA support (pip's manylinux wheel has it)"
    probe = xgb.DMatrix(np.array([[0.0], [1.0]]), label=np.array([0.0, 1.0]))
    with warnings.catch_warnings(), xgb.config_context(verbosity=0):
        warnings.simplefilter("ignore")
        try:
            booster = xgb.train({"device": "cuda", "tree_method": "hist"}, probe, 1)
        except xgb.core.XGBoostError as exc:
            return f"XGBoost cannot use CUDA: {str(exc).splitlines()[0]}"
    used = json.loads(booster.save_config())["learner"]["generic_param"]["device"]
    return None if used.startswith("cuda") else "no visible CUDA GPU (XGBoost fell back to CPU)"


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def gpu_model() -> str:
    """The GPU model, driver and memory from nvidia-smi (or why they are unknown)."""
    if not shutil.which("nvidia-smi"):
        return "unknown (nvidia-smi not found)"
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    done = subprocess.run(query, capture_output=True, text=True, check=False)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 else done.stderr.strip()


def generate(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Hotel-like features and a label with signal, in float32 and category codes."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.gamma(1.5, 20.0, rows).astype("float32") for name in NUMERIC})
    for name, size in CATEGORICAL.items():
        weights = rng.dirichlet(np.full(size, 0.5))
        codes = rng.choice(size, rows, p=weights).astype("int16")
        frame[name] = pd.Categorical.from_codes(codes, categories=[str(i) for i in range(size)])
    logit = (
        0.02 * frame["lead_time"].to_numpy()
        - 0.03 * frame["total_of_special_requests"].to_numpy()
        + 0.8 * (frame["deposit_type"].cat.codes.to_numpy() == 1)
        + 0.3 * np.sin(frame["country"].cat.codes.to_numpy())
        - 1.5
    )
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("float32")
    return frame, label


def read_synthetic(path: Path, rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The first `rows` rows of a `keel synth` parquet, as model features and label."""
    data = pd.read_parquet(path, columns=[*NUMERIC, *CATEGORICAL, TARGET]).head(rows)
    frame = data[NUMERIC].astype("float32")
    for name in CATEGORICAL:
        frame[name] = data[name].astype("category")
    return frame, data[TARGET].to_numpy(dtype="float32")


def _timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_rows(frame: pd.DataFrame, label: np.ndarray, rounds: int, shap_rows: int) -> dict:  # type: ignore[type-arg]
    """Train on CPU and on GPU with the same matrix and parameters; SHAP on both."""
    result: dict[str, object] = {"rows": len(frame), "rounds": rounds}
    matrix, result["matrix_s"] = _timed(
        lambda: xgb.QuantileDMatrix(
            frame, label, max_bin=PARAMS["max_bin"], enable_categorical=True
        )
    )
    boosters = {}
    for device in ("cpu", "cuda"):
        params = {**PARAMS, "device": device, "nthread": cpu_cores()}
        boosters[device], result[f"train_{device}_s"] = _timed(
            lambda p=params: xgb.train(p, matrix, num_boost_round=rounds)
        )
    result["train_speedup"] = result["train_cpu_s"] / result["train_cuda_s"]  # type: ignore[operator]
    shap = xgb.DMatrix(frame.head(shap_rows), enable_categorical=True)
    booster = boosters["cuda"]
    for device in ("cpu", "cuda"):
        booster.set_param({"device": device})
        _, result[f"shap_{device}_s"] = _timed(lambda: booster.predict(shap, pred_contribs=True))
    result["shap_rows"] = min(shap_rows, len(frame))
    result["shap_speedup"] = result["shap_cpu_s"] / result["shap_cuda_s"]  # type: ignore[operator]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--shap-rows", type=int, default=200_000)
    parser.add_argument("--data", type=Path, help="a `keel synth` parquet (default: generate)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    reason = cuda_usable()
    if reason is not None:
        print(f"bench-gpu needs a usable NVIDIA CUDA GPU: {reason}. Nothing measured.")
        sys.exit(3)
    info = {
        "date": dt.date.today().isoformat(),
        "cpu": cpu_model(),
        "cpu_cores": cpu_cores(),
        "gpu": gpu_model(),
        "xgboost": xgb.__version__,
        "params": PARAMS,
        "data": str(args.data) if args.data else "generated (benchmarks/gpu.py)",
    }
    print(f"CPU: {info['cpu']} ({info['cpu_cores']} cores)   GPU: {info['gpu']}")
    warm, info["cuda_warmup_s"] = _timed(
        lambda: xgb.train({"device": "cuda"}, xgb.DMatrix(np.ones((10, 2)), np.ones(10)), 1)
    )
    del warm
    results = []
    for rows in args.rows:
        frame, label = read_synthetic(args.data, rows) if args.data else generate(rows)
        found = bench_rows(frame, label, args.rounds, args.shap_rows)
        target = TARGETS.get(rows)
        found["target_speedup"] = target
        found["holds"] = None if target is None else found["train_speedup"] >= target
        results.append(found)
        verdict = {True: "PASS", False: "FAIL", None: "info"}[found["holds"]]
        print(
            f"{rows:>11,} rows  train CPU {found['train_cpu_s']:8.1f} s  GPU "
            f"{found['train_cuda_s']:7.1f} s  x{found['train_speedup']:.1f} "
            f"(target {target or '-'}: {verdict})   SHAP ({found['shap_rows']:,} rows) CPU "
            f"{found['shap_cpu_s']:.1f} s  GPU {found['shap_cuda_s']:.2f} s  "
            f"x{found['shap_speedup']:.1f}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
