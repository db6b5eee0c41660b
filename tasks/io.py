"""Task I/O helpers: atomic file writes (a failed or killed stage never leaves a half-written
output) and the run logger."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

__all__ = [
    "atomic_dir",
    "atomic_path",
    "prune_cache",
    "read_json",
    "run_logger",
    "write_json",
    "write_parquet",
    "write_text",
]


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger inside a flow or task run, a plain logger outside (CLI stages)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("keel.tasks")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; move it into place only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.replace(target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh directory beside `target`; swap it in only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = target.with_name(f".{target.name}.old")
    try:
        yield staging
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.replace(old)
        staging.replace(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text(target: Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: Path, payload: Any) -> None:
    """Write JSON atomically (sorted keys, so outputs are byte-stable)."""
    write_text(target, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def write_parquet(target: Path, frame: pd.DataFrame) -> None:
    """Write a parquet file atomically."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)


def prune_cache(folder: Path, max_age_days: float) -> int:
    """Remove cache entries (files or folders) not modified for `max_age_days`; count them."""
    cutoff = time.time() - max_age_days * 86400
    removed = 0
    for entry in folder.iterdir():
        try:
            if entry.stat().st_mtime >= cutoff:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        except FileNotFoundError:  # removed by another process meanwhile
            continue
    return removed
