"""keel.report: the markdown model card."""

from __future__ import annotations

from typing import Any

import pytest

from keel.report import render_model_card

METADATA: dict[str, Any] = {
    "target": "is_canceled",
    "task": "binary",
    "training_window": {"cutoff": "2016-07-01", "holdout_end": "2016-08-31"},
    "rows": {"train": 1200, "holdout": 300},
    "device": "cpu",
    "params": {"seed": 42, "eta": 0.05, "max_depth": 6},  # sorted in the card
}
METRICS: dict[str, Any] = {
    "holdout": {"roc_auc": 0.912345, "brier": 0.1, "rows": 300.0},
    "slices": {
        "hotel": {
            "City Hotel": {"roc_auc": 0.9, "rows": 200.0},
            "Resort Hotel": {"roc_auc": 0.85, "rows": 100.0},
        }
    },
}
HASHES = {
    "featurize": {"data/features/train.parquet": "0123456789abcdef0123456789abcdef"},
    "train": {"models/model.ubj": "fedcba9876543210fedcba9876543210", "models/spec.json": "aa"},
}


@pytest.fixture(scope="module")
def card() -> str:
    return render_model_card(METADATA, METRICS, HASHES)


def test_title_and_data_window(card: str) -> None:
    lines = card.splitlines()
    assert lines[0] == "# Model card: is_canceled (binary)"
    assert "- **cutoff**: 2016-07-01" in lines
    assert "- **holdout_end**: 2016-08-31" in lines
    assert "- **rows**: {'train': 1200, 'holdout': 300}" in lines
    assert "- **device**: cpu" in lines
    assert card.endswith("| train | `models/spec.json` | `aa` |\n")


def test_holdout_metrics_are_formatted(card: str) -> None:
    lines = card.splitlines()
    start = lines.index("## Holdout metrics")
    assert lines[start + 2 : start + 7] == [
        "| metric | value |",
        "|---|---|",
        "| roc_auc | 0.9123 |",  # floats with four decimals
        "| brier | 0.1000 |",
        "| rows | 300.0000 |",
    ]


def test_slice_table(card: str) -> None:
    lines = card.splitlines()
    start = lines.index("## Metrics by hotel")
    assert lines[start + 2 : start + 6] == [
        "| hotel | roc_auc | rows |",  # metric columns sorted
        "|---|---|---|",
        "| City Hotel | 0.9000 | 200.0000 |",
        "| Resort Hotel | 0.8500 | 100.0000 |",
    ]


def test_slice_with_a_missing_metric_leaves_the_cell_empty() -> None:
    metrics = {"holdout": {}, "slices": {"hotel": {"A": {"roc_auc": 0.5}, "B": {"rows": 3.0}}}}
    card = render_model_card(METADATA, metrics, {})
    assert "| A | 0.5000 |  |" in card
    assert "| B |  | 3.0000 |" in card


def test_params_are_listed_sorted(card: str) -> None:
    lines = card.splitlines()
    start = lines.index("## Parameters")
    assert lines[start + 2 : start + 7] == [
        "```text",
        "eta: 0.05",
        "max_depth: 6",
        "seed: 42",
        "```",
    ]


def test_hashes_per_stage_and_path(card: str) -> None:
    lines = card.splitlines()
    start = lines.index("## Hashes (DVC md5)")
    assert lines[start + 2 : start + 7] == [
        "| stage | path | md5 |",
        "|---|---|---|",
        "| featurize | `data/features/train.parquet` | `0123456789abcdef0123456789abcdef` |",
        "| train | `models/model.ubj` | `fedcba9876543210fedcba9876543210` |",
        "| train | `models/spec.json` | `aa` |",
    ]


def test_sections_appear_in_order(card: str) -> None:
    headings = [line for line in card.splitlines() if line.startswith("#")]
    assert headings == [
        "# Model card: is_canceled (binary)",
        "## Data window",
        "## Holdout metrics",
        "## Metrics by hotel",
        "## Parameters",
        "## Hashes (DVC md5)",
    ]


def test_minimal_inputs_render() -> None:
    card = render_model_card({}, {}, {})
    assert card.startswith("# Model card: None (None)\n")
    assert "- **split**: random (no time column)" in card
    assert "## Metrics by" not in card
    assert "| metric | value |\n|---|---|\n\n## Parameters" in card
