"""DVC: a no-op `dvc repro` of Keel's pipeline against `dvc --version` (DVC's own start-up).

    .venv/bin/python benchmarks/dvc_noop.py

A throwaway git + DVC project holds the shipped `dvc.yaml`, `params.yaml`, suite, code and the
real bookings; one `dvc repro` runs the five stages, then each timed `dvc repro` finds every
stage up to date and runs nothing (checked).
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

from common import REPO, SOURCE, Ratio, paired

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


def run(repeats: int) -> Ratio:
    """no-op `dvc repro` time / `dvc --version` time, in the same project."""
    with tempfile.TemporaryDirectory(prefix="keel-dvc-bench-") as tmp:
        root = Path(tmp)
        _project(root)
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        _dvc(root, "init", "-q")
        print("dvc repro: running the five stages once ...", flush=True)
        _dvc(root, "repro")

        def noop() -> None:
            ran = re.findall(r"Running stage '(\w+)'", _dvc(root, "repro"))
            if ran:
                raise SystemExit(f"dvc repro was not a no-op: it ran {ran}")

        _dvc(root, "--version")  # warm: both sides then start from a warm file cache
        times = paired(noop, lambda: _dvc(root, "--version"), repeats)
    return Ratio(
        name="DVC: no-op repro / dvc --version",
        ratio=times.time_ratio(),
        target=TARGET,
        kind="max",
        keel=f"{times.keel_s:.2f} s",
        bare=f"{times.bare_s:.2f} s",
        config="the shipped 5-stage dvc.yaml on the real bookings, git + DVC project",
        details=times.details(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    ratio = run(parser.parse_args().repeats)
    print(ratio.line(), f"({ratio.keel} vs {ratio.bare})")


if __name__ == "__main__":
    main()
