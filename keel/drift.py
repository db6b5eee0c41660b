"""Population stability: a reference from training data, PSI per feature and for the score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "FeatureDrift",
    "build_reference",
    "chi2_p_value",
    "compute_psi",
    "drift_report",
    "ks_statistic",
]

_EPS = 1e-4
MISSING = "__missing__"
UNSEEN = "__unseen__"


def _numeric_reference(values: pd.Series, bins: int) -> dict[str, Any]:
    present = values.dropna().to_numpy(dtype="float64")
    edges = (
        np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
        if len(present)
        else np.array([])
    )
    counts = _numeric_counts(values, edges)
    # 501 quantiles stand in for the training sample in the KS test.
    sample = np.quantile(present, np.linspace(0, 1, 501)).tolist() if len(present) else []
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "proportions": _normalise(counts),
        "sample": sample,
    }


def _numeric_counts(values: pd.Series, edges: np.ndarray) -> np.ndarray:
    """Counts per bin (`edges` are the inner edges), then the count of missing values."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    missing = int(np.isnan(numbers).sum())
    # NaN sorts after every edge, so it lands in the top bin: taken out again below (no copy
    # of the present values, which cost a third of the drift report on 1M rows).
    binned = np.bincount(np.searchsorted(edges, numbers, side="right"), minlength=len(edges) + 1)
    binned[len(edges)] -= missing
    return np.append(binned, missing)


def _text_counts(values: pd.Series) -> pd.Series:
    """How often each value occurs, by its text (missing values as MISSING).

    A categorical column is counted through its codes and only its categories are turned into
    text: the same counts as `values.astype("string")`, without converting every row (five
    times faster on 1M rows).
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        names = pd.Series(values.cat.categories).astype("string").tolist()
        counts = np.bincount(values.cat.codes.to_numpy() + 1, minlength=len(names) + 1)
        by_text = pd.Series(counts, index=[MISSING, *names])
        return by_text.groupby(level=0, sort=False).sum()
    return values.astype("string").fillna(MISSING).value_counts()


def _category_counts(shares: dict[str, float], values: pd.Series) -> np.ndarray:
    """Counts of the reference's categories, then of UNSEEN (any other value)."""
    counts = _text_counts(values)
    known = counts.reindex(list(shares), fill_value=0).to_numpy(dtype="float64")
    unseen = float(counts.sum()) - float(known.sum())
    return np.append(known, unseen)


def _categorical_reference(values: pd.Series) -> dict[str, Any]:
    text = values.astype("string")
    shares = text.fillna(MISSING).value_counts(normalize=True)
    return {"kind": "categorical", "proportions": {str(k): float(v) for k, v in shares.items()}}


def _normalise(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * len(counts)


def build_reference(features: pd.DataFrame, scores: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Describe the training distribution of every feature and of the score.

    Args:
        features: The training feature matrix (numeric and categorical columns).
        scores: The model's scores on those rows.
        bins: Quantile bins for numeric columns.

    Returns:
        A JSON-safe reference, saved next to the model.
    """
    reference: dict[str, Any] = {}
    for column in features.columns:
        values = features[column]
        if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(
            values
        ):
            reference[column] = _categorical_reference(values)
        else:
            reference[column] = _numeric_reference(values, bins)
    return {"features": reference, "score": _numeric_reference(pd.Series(scores), bins)}


def compute_psi(reference: dict[str, Any], values: pd.Series) -> float:
    """Population stability index of `values` against one reference entry.

    Numbers use the reference's quantile bins plus a missing bin; categories use the
    reference's categories, a missing bucket and an explicit bucket for unseen ones.
    """
    if reference["kind"] == "numeric":
        expected = np.asarray(reference["proportions"], dtype="float64")
        actual = np.asarray(_normalise(_numeric_counts(values, np.asarray(reference["edges"]))))
    else:
        shares: dict[str, float] = reference["proportions"]
        expected = np.array([*shares.values(), 0.0])
        actual = np.asarray(_normalise(_category_counts(shares, values)))
    expected = np.clip(expected, _EPS, None)
    actual = np.clip(actual, _EPS, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature on one window by one statistic.

    For `psi` and `ks` the value is the statistic and drift means value > threshold; for
    `chi2` the value is the p-value and drift means value < threshold (the significance level).
    """

    feature: str
    statistic: str
    value: float
    threshold: float

    @property
    def drifted(self) -> bool:
        """Whether the statistic crosses its threshold."""
        if self.statistic == "chi2":
            return self.value < self.threshold
        return self.value > self.threshold


def ks_statistic(reference: dict[str, Any], values: pd.Series) -> float | None:
    """Two-sample Kolmogorov-Smirnov distance to the training sample (numeric features)."""
    present = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype="float64")
    if reference["kind"] != "numeric" or not len(present) or not reference.get("sample"):
        return None
    return float(stats.ks_2samp(np.asarray(reference["sample"]), present).statistic)


def chi2_p_value(reference: dict[str, Any], values: pd.Series) -> float | None:
    """Chi-squared goodness of fit of the category counts to the training shares."""
    if reference["kind"] != "categorical" or values.empty:
        return None
    shares: dict[str, float] = reference["proportions"]
    counts = _category_counts(shares, values)
    expected = np.clip(np.array([*shares.values(), 0.0]), _EPS, None)
    expected = expected / expected.sum() * len(values)
    return float(stats.chisquare(counts, expected).pvalue)


def drift_report(
    reference: dict[str, Any],
    features: pd.DataFrame,
    scores: np.ndarray,
    threshold: float,
    *,
    ks_threshold: float | None = None,
    chi2_alpha: float | None = None,
) -> list[FeatureDrift]:
    """PSI of every referenced feature present in `features` and of the score (`__score__`),
    plus KS (numbers) and chi-squared (categories) when their thresholds are given."""
    out = []
    for name, entry in reference["features"].items():
        if name not in features.columns:
            continue
        out.append(FeatureDrift(name, "psi", compute_psi(entry, features[name]), threshold))
        ks = ks_statistic(entry, features[name]) if ks_threshold is not None else None
        if ks is not None and ks_threshold is not None:
            out.append(FeatureDrift(name, "ks", ks, ks_threshold))
        p = chi2_p_value(entry, features[name]) if chi2_alpha is not None else None
        if p is not None and chi2_alpha is not None:
            out.append(FeatureDrift(name, "chi2", p, chi2_alpha))
    score_psi = compute_psi(reference["score"], pd.Series(scores))
    out.append(FeatureDrift("__score__", "psi", score_psi, threshold))
    return out
