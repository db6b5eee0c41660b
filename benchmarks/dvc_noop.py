"""DVC: a no-op `dvc repro` of Keel's pipeline against `dvc --version` (DVC's own start-up).

    .venv/bin/python benchmarks/dvc_noop.py

A throwaway git + DVC project holds the shipped `dvc.yaml`, `params.yaml`, suite, code and the
real bookings; one `dvc repro` runs the five stages, then each timed `dvc repro` finds every
stage up to date and runs nothing (checked).

DVC's own floor is measured beside it, the same way: the no-op `dvc repro` of a project with
one stage (no dependency, one small output) against `dvc --version`. `dvc --version` imports
almost none of DVC, while any `dvc repro` imports its repository, graph and file-system
machinery, so that floor says how much of the pipeline's ratio no `dvc.yaml` can remove.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, SOURCE, Paired, Ratio, paired

BIN = Path(sys.executable).parent
TARGET = 3.0


def _project(root: Path) -> None:
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, root / name)
    for folder in ("expectations", "keel", "tasks"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data/raw").mkdir(parents=True)
    shutil.copy(SOURCE, root / "data/raw" / SOURCE.name)


def _dvc(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    done = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout + done.stderr


_ONE_STAGE = "stages:\n  one:\n    cmd: echo one > out.txt\n    outs:\n      - out.txt\n"


def _noop_ratio(root: Path, repeats: int) -> Paired:
    """Time a no-op `dvc repro` in `root` (after one real run) against `dvc --version`."""
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _dvc(root, "init", "-q")
    _dvc(root, "repro")

    def noop() -> None:
        ran = re.findall(r"Running stage '(\w+)'", _dvc(root, "repro"))
        if ran:
            raise SystemExit(f"dvc repro was not a no-op: it ran {ran}")

    _dvc(root, "--version")  # warm: both sides then start from a warm file cache
    return paired(noop, lambda: _dvc(root, "--version"), repeats)


def run(repeats: int) -> list[Ratio]:
    """no-op `dvc repro` time / `dvc --version` time: Keel's pipeline, then DVC's own floor."""
    with tempfile.TemporaryDirectory(prefix="keel-dvc-bench-") as tmp:
        root = Path(tmp)
        _project(root)
        print("dvc repro: running the five stages once ...", flush=True)
        times = _noop_ratio(root, repeats)
    with tempfile.TemporaryDirectory(prefix="keel-dvc-floor-") as tmp:
        root = Path(tmp)
        (root / "dvc.yaml").write_text(_ONE_STAGE)
        floor = _noop_ratio(root, repeats)
    lines = [
        (
            "DVC: no-op repro / dvc --version",
            times,
            TARGET,
            "the shipped 5-stage dvc.yaml on the real bookings, git + DVC project",
        ),
        (
            "DVC's floor: one-stage no-op / --version",
            floor,
            None,
            "one stage, no dependency, one output: what any `dvc repro` costs",
        ),
    ]
    return [
        Ratio(
            name=name,
            ratio=paired_times.time_ratio(),
            target=target,
            kind="max",
            keel=f"{paired_times.keel_s:.2f} s",
            bare=f"{paired_times.bare_s:.2f} s",
            config=config,
            details=paired_times.details(),
        )
        for name, paired_times, target, config in lines
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    for ratio in run(parser.parse_args().repeats):
        print(ratio.line(), f"({ratio.keel} vs {ratio.bare})")


if __name__ == "__main__":
    main()
