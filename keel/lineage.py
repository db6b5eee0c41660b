"""Cooperation with DVC: DVC decides which stages are stale and records what each produced.

The Prefect flow asks DVC, stage by stage, whether the stage's code, params or inputs changed
since `dvc.lock` was written; it runs only the stale ones and then commits each to DVC, so
`dvc.lock` and the DVC cache end as after `dvc repro`, and the run can record the hashes.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from pathlib import Path
from typing import Any

import yaml

__all__ = ["code_version", "commit_stage", "has_pipeline", "lock_hashes", "stage_is_stale"]

log = logging.getLogger(__name__)


def has_pipeline(root: Path) -> bool:
    """Whether the project is a DVC repository with a `dvc.yaml`."""
    return (root / "dvc.yaml").is_file() and (root / ".dvc").is_dir()


def stage_is_stale(root: Path, stage: str) -> bool:
    """Whether DVC would re-run `stage` (its command, params, deps or outs changed)."""
    from dvc.repo import Repo

    # DVC resolves stage paths against the working directory, whatever Repo() was given.
    with contextlib.chdir(root), Repo(str(root)) as repo, repo.lock:
        (found,) = repo.stage.collect(stage)
        return bool(found.changed())


def commit_stage(root: Path, stage: str) -> None:
    """Record a stage's current deps and outs in `dvc.lock` and the DVC cache."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:
        repo.commit(stage, force=True)
    log.info("committed stage %s to dvc.lock", stage)


def lock_hashes(root: Path) -> dict[str, dict[str, str]]:
    """Per stage, the md5 of each output recorded in `dvc.lock` (empty if there is none)."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    content: dict[str, Any] = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    hashes: dict[str, dict[str, str]] = {}
    for name, stage in (content.get("stages") or {}).items():
        entries = [*(stage.get("deps") or []), *(stage.get("outs") or [])]
        hashes[name] = {e["path"]: e.get("md5", "") for e in entries if "path" in e}
    return hashes


def code_version(root: Path) -> dict[str, Any]:
    """The git commit of the project and whether tracked files differ from it.

    Returns:
        `{"commit": sha or None, "dirty": bool or None}` (None outside a git repository).
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    # dvc.lock is pipeline state that every run rewrites, not code: it does not make a tree dirty.
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock")
    return {"commit": commit, "dirty": bool(status)}
