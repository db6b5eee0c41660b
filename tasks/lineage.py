"""Prefect tasks around DVC: is a stage stale, commit it, read the recorded hashes."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from keel import lineage
from keel.fingerprint import tree_md5
from keel.layout import ProjectPaths

__all__ = ["commit_stage", "current_hashes", "stage_is_stale"]


# DVC takes a repository lock; a concurrent `dvc` command makes these fail transiently.
@task(name="dvc-status", retries=2, retry_delay_seconds=2)
def stage_is_stale(root: Path, stage: str) -> bool:
    """Ask DVC whether the stage must run."""
    return lineage.stage_is_stale(root, stage)


@task(name="dvc-commit", retries=2, retry_delay_seconds=2)
def commit_stage(root: Path, stage: str) -> None:
    """Record the stage's outputs in `dvc.lock` and the DVC cache."""
    lineage.commit_stage(root, stage)


@task(name="hashes")
def current_hashes(root: Path, source: Path, use_dvc: bool) -> dict[str, dict[str, str]]:
    """The md5 of data, features and model: from `dvc.lock`, or computed without DVC."""
    if use_dvc:
        return lineage.lock_hashes(root)
    paths = ProjectPaths(root)
    # An absolute source outside the project (allowed in params.yaml) keeps its full path.
    name = source.relative_to(root) if source.is_relative_to(root) else source
    return {
        "ingest": {str(name): tree_md5(source)},
        "featurize": {"data/features": tree_md5(paths.features_dir)},
        "train": {"models/model": tree_md5(paths.model_dir)},
    }
