"""Drift: `keel.drift.drift_report` (PSI of every feature and of the score against the training
reference, the shipped `monitor` settings) against one `np.histogram` pass over the same
columns, on synthetic bookings (default 1M rows).

    .venv/bin/python benchmarks/drift.py --rows 1000000

The reference is the one saved with the shipped model (`reference.json`), as monitoring uses
it. The bare pass histograms each numeric feature (missing values dropped) into the
reference's bins, each categorical feature's codes into one bin per category, and the score.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
from common import REPO, Ratio, paired, read_bookings, with_outcome_history, with_times
from scoring import shipped_model

from keel.config import load_params
from keel.drift import drift_report
from keel.features import build_features
from keel.model import load_bundle, predict

TARGET = 2.0


def bare_histograms(
    features: pd.DataFrame, scores: np.ndarray, reference: dict
) -> list[np.ndarray]:  # type: ignore[type-arg]
    """One np.histogram per column: the bare baseline."""
    out = []
    for name, entry in reference["features"].items():
        values = features[name]
        if isinstance(values.dtype, pd.CategoricalDtype):
            codes = values.cat.codes.to_numpy()
            out.append(
                np.histogram(
                    codes,
                    bins=len(values.cat.categories) + 1,
                    range=(-1, len(values.cat.categories)),
                )[0]
            )
        else:
            numbers = values.to_numpy(dtype="float64")
            edges = np.asarray(entry["edges"], dtype="float64")
            bins = np.concatenate([[-np.inf], edges, [np.inf]]) if len(edges) else 1
            out.append(np.histogram(numbers[~np.isnan(numbers)], bins=bins)[0])
    edges = np.concatenate([[-np.inf], reference["score"]["edges"], [np.inf]])
    out.append(np.histogram(scores, bins=edges)[0])
    return out


def run(rows: int, repeats: int) -> Ratio:
    """drift_report time / one np.histogram pass, same columns, same rows."""
    model_dir = shipped_model()
    bundle = load_bundle(model_dir)
    reference = json.loads((model_dir / "reference.json").read_text())
    monitor = load_params(REPO / "params.yaml").monitor
    records = with_outcome_history(with_times(read_bookings(rows)), bundle.spec.history)
    features = build_features(records, bundle.spec)
    scores = predict(bundle.booster, features)

    def keel() -> object:
        return drift_report(
            reference,
            features,
            scores,
            monitor.psi_threshold,
            ks_threshold=monitor.ks_threshold,
            chi2_alpha=monitor.chi2_alpha,
        )

    times = paired(keel, lambda: bare_histograms(features, scores, reference), repeats)
    return Ratio(
        name="drift: drift_report / np.histogram pass",
        ratio=times.time_ratio(),
        target=TARGET,
        kind="max",
        keel=f"{times.keel_s:.2f} s",
        bare=f"{times.bare_s:.2f} s",
        config=f"{rows:,} synthetic rows, {len(reference['features'])} features + score, PSI "
        f"(ks_threshold {monitor.ks_threshold}, chi2_alpha {monitor.chi2_alpha})",
        details=times.details(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ratio = run(args.rows, args.repeats)
    print(ratio.line(), f"({ratio.keel} vs {ratio.bare})")


if __name__ == "__main__":
    main()
