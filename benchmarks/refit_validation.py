"""Why `retrain.refit`: a validation replay, before the replay's start, of what a retraining learns.

    .venv/bin/python benchmarks/refit_validation.py                  # 2016-01-01 .. 2016-06-30
    .venv/bin/python benchmarks/refit_validation.py --gap 28 --gap 0 # the two policies compared

An offline stand-in for the `scheduled` strategy, with Keel's own features (the shipped
`featurize` section, outcome history as of each booking's day), training recipe (early stopping
on the 56 days before the cutoff, refit with the best rounds, recency weights) and protocol
(the backlog open at the start scored by the initial model, then each booking scored by the
model of the 4-week period it is made in). It has no gate: every retraining is adopted. What
it varies is `--gap`, the days of newest labelled arrivals a retraining leaves out of its model:
28 is a candidate trained without its gate window (`retrain.refit: false`), 0 the refit that
learns it too (`retrain.refit: true`).

The period defaults to the six months before the replay's start, so that the choice between the
two policies is made without looking at the months the replay measures. It prints the monthly
ROC AUC (by arrival month, each booking with the score it got when made) and its mean.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from keel.config import Params, load_params
from keel.features import FeatureSpec, build_features, fit_feature_spec
from keel.history import HistorySettings, add_history
from keel.model import booster_params, recency_weights
from keel.table import EVENT_TIME, LABEL_TIME, ORDER_TIME
from tasks.production import load_records

REPO = Path(__file__).resolve().parents[1]


def _model(
    features: pd.DataFrame, frame: pd.DataFrame, params: Params, as_of: pd.Timestamp, gap: int
) -> tuple[xgb.Booster, FeatureSpec]:
    """A model trained at `as_of` on arrivals before `as_of - 1 day - gap` known by then."""
    arrival, known = frame[ORDER_TIME], frame[LABEL_TIME]
    y = pd.to_numeric(frame[params.data.target])
    cutoff = as_of - pd.Timedelta(days=1 + gap)
    vstart = cutoff - pd.Timedelta(days=params.retrain.validation_days)
    train = (arrival < cutoff) & (known <= cutoff)
    fit = (arrival < vstart) & (known <= vstart)
    valid = (arrival >= vstart) & (arrival < cutoff)
    spec = fit_feature_spec(features[train], params.featurize)
    x = build_features(features, spec)
    booster_cfg = {**booster_params(params.data, params.train, "cpu"), "nthread": 0}
    half_life = params.train.recency_half_life_days or float("inf")
    early = xgb.train(
        booster_cfg,
        xgb.QuantileDMatrix(
            x[fit],
            y[fit],
            weight=recency_weights(arrival[fit], vstart, half_life),
            enable_categorical=True,
        ),
        params.train.num_boost_round,
        evals=[(xgb.DMatrix(x[valid], y[valid], enable_categorical=True), "valid")],
        early_stopping_rounds=params.train.early_stopping_rounds,
        verbose_eval=False,
    )
    full = xgb.QuantileDMatrix(
        x[train],
        y[train],
        weight=recency_weights(arrival[train], cutoff, half_life),
        enable_categorical=True,
    )
    return xgb.train(booster_cfg, full, early.best_iteration + 1), spec


def replay(
    params: Params, start: pd.Timestamp, end: pd.Timestamp, every: int, gap: int
) -> list[tuple[str, float]]:
    """Monthly ROC AUC of the arrivals from `start` to `end`, retraining every `every` days."""
    frame = load_records(REPO, params)
    history = params.featurize.history
    settings = HistorySettings(tuple(history.columns), history.window_days, history.prior)
    features = add_history(frame, frame, settings=settings, target=params.data.target)
    made, known = frame[EVENT_TIME], frame[LABEL_TIME]
    score = pd.Series(np.nan, index=frame.index)
    when = start
    rows = (made <= start) & (known > start)  # the backlog open at the start
    while when <= end:
        # The initial model learns everything known at the start; later ones leave out `gap`.
        booster, spec = _model(features, frame, params, when, 0 if when == start else gap)
        rows |= (made > when) & (made <= when + pd.Timedelta(days=every))
        x = build_features(features[rows], spec)
        score[rows] = booster.predict(xgb.DMatrix(x, enable_categorical=True))
        rows[:] = False
        when += pd.Timedelta(days=every)
    month = frame[ORDER_TIME].dt.to_period("M")
    y = pd.to_numeric(frame[params.data.target])
    out = []
    for period in pd.period_range(start.to_period("M"), end.to_period("M"), freq="M"):
        inside = (month == period) & score.notna()
        out.append((str(period), float(roc_auc_score(y[inside], score[inside]))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--start", default="2016-01-01")
    parser.add_argument("--end", default="2016-06-30")
    parser.add_argument("--every", type=int, default=28, help="days between retrainings")
    parser.add_argument("--gap", type=int, action="append", help="days left out (repeatable)")
    args = parser.parse_args()
    params = load_params(Path(args.params))
    start, end = pd.Timestamp(args.start), pd.Timestamp(args.end)
    for gap in args.gap or [int(params.retrain.holdout_days), 0]:
        months = replay(params, start, end, args.every, gap)
        figures = " ".join(f"{auc:.3f}" for _, auc in months)
        mean = np.mean([auc for _, auc in months])
        print(f"gap {gap:>3} days: {figures}  mean {mean:.4f}", flush=True)
    print("months:", " ".join(m for m, _ in months))


if __name__ == "__main__":
    main()
