"""Scoring, shared by batch scoring and the online API.

`score_matrix` is the one scoring step: a model matrix in, scores, decisions and the top reason
codes (SHAP contributions: exact ones from per-leaf tables, `keel.treeshap`, where the model has
them, else XGBoost's) out. Batch scoring (`iter_scored`, `score_records`)
builds the matrix from a frame with `keel.matrix.build_matrix`, chunk by chunk so a batch of any
size scores in bounded memory; the API builds it from the request's records with
`keel.matrix.matrix_from_columns`, which reads values exactly as `build_matrix` does (the same
code) without building a frame.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xgboost as xgb

from keel.features import FeatureSpec
from keel.matrix import SMALL_ROWS, build_matrix, value_text
from keel.model import ModelBundle, shap_booster
from keel.treeshap import LeafTables, build_tables

__all__ = ["Scored", "iter_chunks", "iter_scored", "score_matrix", "score_records"]


def iter_chunks(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    """Consecutive slices of at most `rows` rows."""
    if 0 < len(frame) <= rows:
        yield frame  # one chunk: no slice (an API request is one small chunk)
        return
    for start in range(0, len(frame), rows):
        yield frame.iloc[start : start + rows]


_on_cpu: weakref.WeakSet[xgb.Booster] = weakref.WeakSet()
_on_cpu_lock = threading.Lock()


def _predict_on_cpu(booster: xgb.Booster) -> None:
    """Pin a booster to the CPU once: `set_param` is not safe while another thread (an API
    request) predicts with the same booster, so it never runs on a booster already in use."""
    if booster in _on_cpu:
        return
    with _on_cpu_lock:
        if booster not in _on_cpu:
            booster.set_param({"device": "cpu"})
            _on_cpu.add(booster)


_tables: weakref.WeakKeyDictionary[xgb.Booster, LeafTables | None] = weakref.WeakKeyDictionary()
_tables_lock = threading.Lock()


def leaf_tables(booster: xgb.Booster) -> LeafTables | None:
    """The booster's exact-TreeSHAP tables (`keel.treeshap`), built once per booster (about
    0.3 s for the shipped model; the API builds them when it loads a model, before serving it);
    None when the model has none (XGBoost's TreeSHAP is used)."""
    try:
        return _tables[booster]
    except KeyError:
        pass
    with _tables_lock:
        if booster not in _tables:
            _tables[booster] = build_tables(booster)
        return _tables[booster]


def _contributions(bundle: ModelBundle, matrix: np.ndarray, reason_method: str) -> np.ndarray:
    booster = bundle.booster
    explainer = shap_booster(booster, str(bundle.metadata.get("device", "cpu")))
    if reason_method == "shap" and explainer is booster:  # on the CPU
        tables = leaf_tables(booster)
        if tables is not None:
            return tables.contributions(matrix)
    # A plain DMatrix: the matrix is in the spec's column order, and the trees carry their own
    # split types (categorical splits included), so feature names and types would change
    # nothing but cost about a third of a one-record request's SHAP step (the contributions
    # are bit-identical: tests/unit/test_scoring.py).
    contributions: np.ndarray = explainer.predict(
        # One thread for a few rows: starting the thread pool costs more than the work.
        xgb.DMatrix(matrix, nthread=1 if len(matrix) <= SMALL_ROWS else None),
        pred_contribs=True,
        approx_contribs=reason_method == "approx",
        validate_features=False,
    )
    return contributions


def _reasons(
    spec: FeatureSpec, matrix: np.ndarray, contributions: np.ndarray, top: int
) -> list[list[dict[str, object]]]:
    names = spec.order
    decoders = [spec.categories.get(n) for n in names]
    order = np.argsort(-np.abs(contributions[:, : len(names)]), axis=1)[:, :top]
    values = np.take_along_axis(matrix, order, axis=1).tolist()
    effects = np.take_along_axis(contributions, order, axis=1).tolist()
    return [
        [
            {
                "feature": names[j],
                "value": value_text(value, decoders[j]),
                "contribution": round(effect, 6),
            }
            for j, value, effect in zip(idx, row_values, row_effects, strict=True)
        ]
        for idx, row_values, row_effects in zip(order.tolist(), values, effects, strict=True)
    ]


def iter_scored(
    bundle: ModelBundle,
    records: pd.DataFrame,
    *,
    threshold: float,
    reason_codes: int = 3,
    chunk_rows: int = 50_000,
    reason_method: str = "shap",
) -> Iterator[pd.DataFrame]:
    """Score raw records chunk by chunk (memory bounded by one chunk).

    Args:
        bundle: The model, its feature spec and metadata.
        records: Raw records (the spec's columns; extra columns are ignored).
        threshold: Decision threshold on the score.
        reason_codes: How many reasons (largest absolute contributions) per record.
        chunk_rows: Rows per chunk.
        reason_method: `shap` (exact TreeSHAP) or `approx` (XGBoost's approximate
            contributions: about as fast as exact ones for one record, several times the rows
            per second in batches; same sign and usually the same top features).

    Yields:
        Per chunk, a frame with `score`, `decision` and `reasons`, indexed like `records`.
    """
    for chunk in iter_chunks(records, chunk_rows):
        scored = score_matrix(
            bundle,
            build_matrix(chunk, bundle.spec),
            threshold=threshold,
            reason_codes=reason_codes,
            reason_method=reason_method,
        )
        yield pd.DataFrame(
            {"score": scored.score, "decision": scored.decision, "reasons": scored.reasons},
            index=chunk.index,
        )


@dataclass(frozen=True)
class Scored:
    """The scores of a model matrix's rows.

    Attributes:
        score: The model's score per row (float64).
        decision: 1 where score >= the threshold, else 0 (int64).
        reasons: Per row, the top reason codes: `feature`, `value` (as `build_features`
            holds it), `contribution` (log-odds, rounded to 6 places).
    """

    score: np.ndarray
    decision: np.ndarray
    reasons: list[list[dict[str, object]]]


def score_matrix(
    bundle: ModelBundle,
    matrix: np.ndarray,
    *,
    threshold: float,
    reason_codes: int = 3,
    reason_method: str = "shap",
) -> Scored:
    """Score the rows of a model matrix: the step batch scoring and the API share.

    Args:
        bundle: The model, its feature spec and metadata.
        matrix: Rows in the spec's column order, from `keel.matrix.build_matrix` (a batch) or
            `keel.matrix.matrix_from_columns` (an API request): the same values for the same
            records.
        threshold: Decision threshold on the score.
        reason_codes: How many reasons (largest absolute contributions) per row.
        reason_method: `shap` (exact TreeSHAP) or `approx` (XGBoost's approximate
            contributions: about as fast as exact ones for one record, several times the rows
            per second in batches; same sign and usually the same top features).

    Returns:
        Scores, decisions and reason codes, one per row.
    """
    booster, spec = bundle.booster, bundle.spec
    _predict_on_cpu(booster)
    score = np.asarray(booster.inplace_predict(matrix), dtype="float64")
    # One shared, empty list per row when no reasons are asked for (no per-row objects).
    reasons: list[list[dict[str, object]]] = [[]] * len(matrix)
    if reason_codes:  # 0: no reasons, and no SHAP pass (by far the dearest step)
        contributions = _contributions(bundle, matrix, reason_method)
        reasons = _reasons(spec, matrix, contributions, reason_codes)
    return Scored(score, (score >= threshold).astype("int64"), reasons)


def score_records(
    bundle: ModelBundle,
    records: pd.DataFrame,
    *,
    threshold: float,
    reason_codes: int = 3,
    chunk_rows: int = 50_000,
    reason_method: str = "shap",
) -> pd.DataFrame:
    """Score raw records with a model bundle, all at once (see `iter_scored`).

    Returns:
        A frame with `score`, `decision` and `reasons`, indexed like `records`.
    """
    parts = list(
        iter_scored(
            bundle,
            records,
            threshold=threshold,
            reason_codes=reason_codes,
            chunk_rows=chunk_rows,
            reason_method=reason_method,
        )
    )
    if not parts:
        return pd.DataFrame({"score": [], "decision": [], "reasons": []})
    return parts[0] if len(parts) == 1 else pd.concat(parts)
