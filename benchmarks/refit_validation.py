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
import datetime as dt
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from keel.config import Params, SplitConfig, load_params
from keel.features import FeatureSpec, build_features, fit_feature_spec
from keel.history import HistorySettings, add_history
from keel.model import recency_weights, train_model
from keel.splits import split_frame
from keel.table import EVENT_TIME, LABEL_TIME, ORDER_TIME
from tasks.production import load_records

REPO = Path(__file__).resolve().parents[1]


def _model(
    features: pd.DataFrame, params: Params, as_of: pd.Timestamp, gap: int
) -> tuple[xgb.Booster, FeatureSpec]:
    """A model trained at `as_of` on arrivals before `as_of - 1 day - gap` known by then, with
    Keel's own split (`split_frame`, no holdout) and training (`train_model`, recency weights)."""
    cutoff = (as_of - pd.Timedelta(days=1 + gap)).date()
    policy = SplitConfig(
        method="time",
        cutoff=cutoff,
        validation_start=cutoff - dt.timedelta(days=params.retrain.validation_days),
        holdout_end=cutoff,
        no_holdout=True,
    )
    split = split_frame(features, policy)
    spec = fit_feature_spec(features[split.train], params.featurize)
    x, y = build_features(features, spec), pd.to_numeric(features[params.data.target])
    half_life = params.train.recency_half_life_days

    def weights(rows: pd.Series, reference: dt.date) -> np.ndarray | None:
        arrival = features.loc[rows, ORDER_TIME]
        return (
            None
            if half_life is None
            else recency_weights(arrival, pd.Timestamp(reference), half_life)
        )

    result = train_model(
        x[split.fit],
        y[split.fit],
        x[split.valid],
        y[split.valid],
        data=params.data,
        config=params.train,
        fit_weight=weights(split.fit, policy.validation_start),
        full=(x[split.train], y[split.train], weights(split.train, cutoff)),
    )
    return result.booster, spec


def with_history(params: Params) -> pd.DataFrame:
    """The records, each with its outcome history as of the day it was made."""
    frame = load_records(REPO, params)
    history = params.featurize.history
    settings = HistorySettings(tuple(history.columns), history.window_days, history.prior)
    return add_history(frame, frame, settings=settings, target=params.data.target)


def replay(
    params: Params,
    features: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    every: int,
    gap: int,
) -> list[tuple[str, float]]:
    """Monthly ROC AUC of the arrivals from `start` to `end`, retraining every `every` days."""
    made, known = features[EVENT_TIME], features[LABEL_TIME]
    score = pd.Series(np.nan, index=features.index)
    when = start
    rows = (made <= start) & (known > start)  # the backlog open at the start
    while when <= end:
        # The initial model learns everything known at the start; later ones leave out `gap`.
        booster, spec = _model(features, params, when, 0 if when == start else gap)
        rows |= (made > when) & (made <= when + pd.Timedelta(days=every))
        x = build_features(features[rows], spec)
        score[rows] = booster.predict(xgb.DMatrix(x, enable_categorical=True))
        rows[:] = False
        when += pd.Timedelta(days=every)
    month = features[ORDER_TIME].dt.to_period("M")
    y = pd.to_numeric(features[params.data.target])
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
    features = with_history(params)
    for gap in args.gap or [int(params.retrain.holdout_days), 0]:
        months = replay(params, features, start, end, args.every, gap)
        figures = " ".join(f"{auc:.3f}" for _, auc in months)
        mean = np.mean([auc for _, auc in months])
        print(f"gap {gap:>3} days: {figures}  mean {mean:.4f}", flush=True)
    print("months:", " ".join(m for m, _ in months))


if __name__ == "__main__":
    main()
