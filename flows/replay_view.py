"""What `keel replay` shows in the terminal: a progress bar per strategy and the final table."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.replay import Progress as OnProgress

__all__ = ["print_summary", "progress_bars"]


@contextlib.contextmanager
def progress_bars(strategies: Sequence[str]) -> Iterator[OnProgress]:
    """One bar per strategy; yields the callback the replay reports its steps to."""
    columns = (
        TextColumn("{task.fields[strategy]:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        bars = {
            s: progress.add_task(s, total=None, strategy=s, note="starting") for s in strategies
        }

        def on_progress(strategy: str, step: int, total: int, note: str) -> None:
            progress.update(bars[strategy], completed=step, total=total, note=note[:60])

        yield on_progress


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_summary(summary: dict[str, Any]) -> list[str]:
    """Print the comparison by month and the targets; return the names of missed targets."""
    console = Console()
    strategies: dict[str, Any] = summary["strategies"]
    table = Table(title=f"ROC AUC by month of {summary['month_by']} (records scored)")
    table.add_column("month")
    for name in strategies:
        table.add_column(name, justify="right")
    months = sorted({m["month"] for s in strategies.values() for m in s["months"]})
    for month in months:
        cells = []
        for s in strategies.values():
            row = next((m for m in s["months"] if m["month"] == month), None)
            cells.append("-" if row is None else f"{_num(row['roc_auc'])} ({row['rows']})")
        table.add_row(month, *cells)
    table.add_section()
    table.add_row("mean", *(_num(s["mean_auc"]) for s in strategies.values()))
    table.add_row("worst", *(_num(s["min_auc"]) for s in strategies.values()))
    table.add_row("retrainings", *(str(s["retrain_count"]) for s in strategies.values()))
    table.add_row("promotions", *(str(len(s["promotions"])) for s in strategies.values()))
    table.add_row("rejections", *(str(len(s["rejections"])) for s in strategies.values()))
    console.print(table)
    targets = Table(title="Targets")
    for column in ("check", "target", "measured", ""):
        targets.add_column(column)
    missed = []
    for check in summary["targets"]:
        targets.add_row(
            check["name"],
            check["target"],
            check["measured"],
            "[green]holds[/]" if check["holds"] else "[red]missed[/]",
        )
        if not check["holds"]:
            missed.append(check["name"])
    console.print(targets)
    console.print(
        f"Report: {summary['report_dir']}/report.html  chart: {summary['report_dir']}/chart.png"
        f"  data: {summary['report_dir']}/summary.json  ({summary['wall_seconds']:.0f} s)"
    )
    return missed
