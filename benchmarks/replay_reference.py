"""The replay's reference points: a plain XGBoost, never retrained, under the replay's protocol.

    .venv/bin/python benchmarks/replay_reference.py            # the shipped params' replay

The issue's reference model (depth 6, 300 rounds, learning rate 0.1, the raw non-leaking
columns of `featurize` with native categoricals, no outcome history, no weights) is trained once
on the arrivals before `replay.start` whose outcome was known then, and scored on every month
of the replay for three populations of bookings:

- `all`: every arrival of the month (how the issue's reference figures were measured);
- `as made`: the replay's protocol with `replay.score_as_made` (bookings made before the start
  count only if still open at the start; later ones all, each scored when made);
- `open at step end`: the strict protocol (`score_as_made: false`): a booking whose outcome
  became known within the week it was made is never scored.

It needs no Prefect: it shows what a model that cannot learn anything new does on the same
months, so a `static` figure far above these is the outcome history at work, not a leak (no
feature here reads any outcome).
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from keel.config import load_params
from keel.table import EVENT_TIME, LABEL_TIME, ORDER_TIME
from tasks.production import load_records

REPO = Path(__file__).resolve().parents[1]


def populations(frame: pd.DataFrame, start: pd.Timestamp, step_days: int) -> dict[str, pd.Series]:
    """Which bookings each protocol scores (masks over `frame`)."""
    made, known = frame[EVENT_TIME], frame[LABEL_TIME]
    before = made <= start
    open_at_start = known > start
    # A booking made in (T - step, T] belongs to the step ending at T.
    steps = np.ceil((made - start).dt.days.clip(lower=0) / step_days) * step_days
    step_end = start + pd.to_timedelta(steps, unit="D")
    return {
        "all": pd.Series(True, index=frame.index),
        "as made": (before & open_at_start) | ~before,
        "open at step end": (before & open_at_start) | (~before & (known > step_end)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--out", default=str(REPO / "reports/replay/reference.json"))
    args = parser.parse_args()
    params_file = Path(args.params)
    params = load_params(params_file)
    replay = params.replay
    assert replay.start and replay.end, "replay.start and replay.end are needed"
    frame = load_records(params_file.parent, params)
    columns = params.featurize.numeric + params.featurize.categorical
    x = frame[columns].copy()
    for col in params.featurize.categorical:
        x[col] = x[col].astype("category")
    y = pd.to_numeric(frame[params.data.target])
    start, end = pd.Timestamp(replay.start), pd.Timestamp(replay.end)
    train = (frame[ORDER_TIME] < start) & (frame[LABEL_TIME] <= start)
    booster = xgb.train(
        {"max_depth": 6, "eta": 0.1, "objective": "binary:logistic", "tree_method": "hist"},
        xgb.DMatrix(x[train], y[train], enable_categorical=True),
        num_boost_round=300,
    )
    score = pd.Series(booster.predict(xgb.DMatrix(x, enable_categorical=True)), index=frame.index)
    month = frame[ORDER_TIME].dt.strftime("%Y-%m")
    inside = (frame[ORDER_TIME] >= start) & (frame[ORDER_TIME] <= end)
    result: dict[str, dict[str, float]] = {}
    for name, mask in populations(frame, start, replay.step_days).items():
        rows = inside & mask
        result[name] = {
            str(m): float(roc_auc_score(y[rows][month[rows] == m], score[rows][month[rows] == m]))
            for m in sorted(month[rows].unique())
        }
    print(f"plain XGBoost trained on what was known at {start.date()}, never retrained")
    print(f"{'month':<9}" + "".join(f"{n:>18}" for n in result))
    for m in result["all"]:
        print(f"{m:<9}" + "".join(f"{result[n].get(m, float('nan')):>18.3f}" for n in result))
    print(f"{'mean':<9}" + "".join(f"{np.mean(list(r.values())):>18.3f}" for r in result.values()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
