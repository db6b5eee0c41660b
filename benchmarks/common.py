"""Shared pieces of the benchmarks: timing, the synthetic data, the machine, the result rows.

Every benchmark measures a Keel stage and its bare baseline in the same run, on the same data
and the same machine, and reports the median of several repetitions and their ratio with the
issue's target. A result is a `Ratio`; `run_all.py` collects them into
`reports/bench/latest.json` and prints the table.
"""

from __future__ import annotations

import os

# As `keel` does (flows/cli.py): OpenMP threads sleep instead of spinning while they wait, or a
# few busy processes on 2 cores starve XGBoost's working threads. Read once, when OpenMP loads:
# the scripts import this module before anything that loads XGBoost.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datetime as dt
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "data/raw/hotel_bookings.csv.gz"
SYNTH_DIR = REPO / "data/synth"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Paired:
    """Interleaved timings of Keel and its baseline (Keel, bare, Keel, bare, ...), so that a
    change of load on a shared machine hits both sides alike; the ratio is the median of the
    per-pair ratios."""

    keel: list[float]
    bare: list[float]

    @property
    def keel_s(self) -> float:
        """Keel's median time."""
        return statistics.median(self.keel)

    @property
    def bare_s(self) -> float:
        """The baseline's median time."""
        return statistics.median(self.bare)

    def time_ratio(self) -> float:
        """Median of keel / bare over the pairs."""
        return statistics.median(k / b for k, b in zip(self.keel, self.bare, strict=True))

    def details(self) -> dict[str, list[float]]:
        """Every repetition, for the JSON report."""
        return {"keel_s": self.keel, "bare_s": self.bare}


def paired(keel: Callable[[], object], bare: Callable[[], object], repeats: int) -> Paired:
    """Time `keel` and `bare` alternately, `repeats` times each."""
    out = Paired([], [])
    for _ in range(repeats):
        for fn, times in ((keel, out.keel), (bare, out.bare)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return out


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """The median wall time of `repeats` calls of `fn`, and every time."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


@dataclass
class Ratio:
    """One benchmark line: Keel's figure, the bare baseline's, their ratio and the target.

    `ratio` is defined per benchmark (a time ratio or a throughput ratio); `target` is the
    issue's bound and `kind` says whether the ratio must be at most (`max`) or at least (`min`)
    it. `config` names exactly what was measured.
    """

    name: str
    ratio: float
    target: float | None
    kind: str  # "max" | "min"
    keel: str
    bare: str
    config: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> bool | None:
        """Whether the ratio meets its target (None: no target)."""
        if self.target is None:
            return None
        return self.ratio <= self.target if self.kind == "max" else self.ratio >= self.target

    def to_json(self) -> dict[str, Any]:
        """The line as JSON, with `holds`."""
        return {**asdict(self), "holds": self.holds}

    def line(self) -> str:
        """One line for the terminal."""
        bound = (
            "n/a"
            if self.target is None
            else f"{'<=' if self.kind == 'max' else '>='} {self.target:g}"
        )
        verdict = {True: "PASS", False: "FAIL", None: "info"}[self.holds]
        return f"{self.name:<44} {self.ratio:>9.3f}  target {bound:<8} {verdict}"


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": dt.date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": cores,
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def synthetic_bookings(rows: int, seed: int = 0) -> Path:
    """The synthetic bookings of `rows` rows, generated once into data/synth/."""
    path = SYNTH_DIR / f"bookings_{rows}_{seed}.parquet"
    if not path.is_file():
        from keel.synth import fit_synthesizer, write_synthetic
        from keel.table import read_source

        print(f"generating {rows:,} synthetic bookings into {path} ...", flush=True)
        write_synthetic(fit_synthesizer(read_source(SOURCE), seed=seed), rows, path, seed=seed)
    return path


def read_bookings(rows: int, seed: int = 0) -> pd.DataFrame:
    """The synthetic bookings as a frame."""
    return pd.read_parquet(synthetic_bookings(rows, seed))


def with_times(records: pd.DataFrame) -> pd.DataFrame:
    """The records with the time columns of the shipped `params.yaml` (as the feed has them)."""
    from keel.config import load_params
    from keel.table import add_times

    return add_times(records, load_params(REPO / "params.yaml").data)


def with_outcome_history(
    records: pd.DataFrame, history: dict[str, Any], pool: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Records (with their time columns) as the score path sees them: with the outcome-history
    features a model's spec reads (`history`: `spec.history`), counted from the outcomes `pool`
    holds (default: the records themselves), each as of the record's own booking day. A model
    without history features gets the records unchanged."""
    from keel.config import load_params
    from keel.history import with_history

    target = load_params(REPO / "params.yaml").data.target
    return with_history(records, records if pool is None else pool, history, target)
