"""Human-readable summaries: the model card shown as a Prefect artifact."""

from __future__ import annotations

from typing import Any

__all__ = ["render_model_card"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_model_card(
    metadata: dict[str, Any], metrics: dict[str, Any], hashes: dict[str, dict[str, str]]
) -> str:
    """Render a markdown model card.

    Args:
        metadata: The model's `metadata.json`.
        metrics: The evaluate stage's `metrics.json`.
        hashes: Per stage, output path -> md5 (from `dvc.lock` or computed).

    Returns:
        Markdown with the data window, holdout metrics, per-slice metrics, params and hashes.
    """
    lines = [
        f"# Model card: {metadata.get('target')} ({metadata.get('task')})",
        "",
        "## Data window",
    ]
    window = metadata.get("training_window") or {"split": "random (no time column)"}
    lines += [f"- **{k}**: {v}" for k, v in window.items()]
    rows = metadata.get("rows", {})
    lines += [f"- **rows**: {rows}", f"- **device**: {metadata.get('device')}", ""]
    holdout = metrics.get("holdout", {})
    lines += ["## Holdout metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in holdout.items()]
    for column, slices in (metrics.get("slices") or {}).items():
        names = sorted({m for values in slices.values() for m in values})
        lines += ["", f"## Metrics by {column}", "", f"| {column} | " + " | ".join(names) + " |"]
        lines += ["|---" * (len(names) + 1) + "|"]
        for value, vals in slices.items():
            lines += [f"| {value} | " + " | ".join(_fmt(vals.get(n, "")) for n in names) + " |"]
    lines += ["", "## Parameters", "", "```text"]
    lines += [f"{k}: {v}" for k, v in sorted((metadata.get("params") or {}).items())]
    lines += ["```", "", "## Hashes (DVC md5)", "", "| stage | path | md5 |", "|---|---|---|"]
    for stage, entries in hashes.items():
        lines += [f"| {stage} | `{path}` | `{md5}` |" for path, md5 in entries.items()]
    return "\n".join(lines) + "\n"
