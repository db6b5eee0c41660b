"""`make bench`: every stage against its bare baseline, on 2 cores in under 20 minutes.

    .venv/bin/python benchmarks/run_all.py            # 1M rows, 3 repetitions
    .venv/bin/python benchmarks/run_all.py --quick    # 100k rows, 1 repetition (a smoke run)

Prints each ratio with its target and PASS/FAIL, and writes every figure, the configuration
measured and the machine to `reports/bench/latest.json`. The figures in README "Benchmarks"
come from this file.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import drift
import dvc_noop
import orchestration
import scoring
import validation
from common import REPO, Ratio, machine, synthetic_bookings

OUT = REPO / "reports/bench/latest.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100k rows, 1 repetition")
    args = parser.parse_args()
    rows, repeats = (100_000, 1) if args.quick else (args.rows, args.repeats)
    started = time.perf_counter()
    info = machine()
    synthetic_bookings(rows)
    ratios: list[Ratio] = []
    steps = [
        ("scoring and writes", lambda: scoring.run(rows, repeats, None)),
        ("validation", lambda: ([validation.run(rows, repeats)], {})),
        ("drift", lambda: ([drift.run(rows, repeats)], {})),
        ("dvc", lambda: (dvc_noop.run(repeats), {})),
        ("orchestration and end to end", lambda: (orchestration.run(rows, repeats), {})),
    ]
    extra: dict[str, object] = {}
    timings = {}
    for name, step in steps:
        print(f"== {name}", flush=True)
        step_start = time.perf_counter()
        found, more = step()
        timings[name] = round(time.perf_counter() - step_start, 1)
        for ratio in found:
            print(ratio.line(), f"({ratio.keel} vs {ratio.bare})", flush=True)
        ratios += found
        extra |= more
    elapsed = time.perf_counter() - started
    info |= {"elapsed_s": round(elapsed, 1), "steps_s": timings, "rows": rows, "repeats": repeats}
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps({"machine": info, "results": [r.to_json() for r in ratios], **extra}, indent=2)
    )
    print()
    print(f"{'benchmark':<44} {'ratio':>9}  target        verdict")
    for ratio in ratios:
        print(ratio.line())
    print(
        f"\n{info['date']}, {info['cpu']}, {info['cores']} cores, {rows:,} rows, "
        f"median of {repeats}; {elapsed / 60:.1f} min; written to {OUT.relative_to(REPO)}"
    )


if __name__ == "__main__":
    main()
