"""Code version and DVC lock reading."""

from __future__ import annotations

import subprocess
from pathlib import Path

from keel.lineage import code_version, has_pipeline, lock_hashes


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True
    )


def test_code_version_tracks_commit_and_dirtiness(tmp_path: Path) -> None:
    assert code_version(tmp_path) == {"commit": None, "dirty": None}
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "c")
    clean = code_version(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert code_version(tmp_path)["dirty"] is False  # pipeline state is not code
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path)["dirty"] is True


def test_lock_hashes_reads_deps_and_outs(tmp_path: Path) -> None:
    assert lock_hashes(tmp_path) == {} and not has_pipeline(tmp_path)
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train:\n    cmd: keel stage train\n"
        "    deps:\n    - path: data/features\n      md5: aaa.dir\n"
        "    outs:\n    - path: models/model\n      md5: bbb.dir\n"
    )
    assert lock_hashes(tmp_path) == {
        "train": {"data/features": "aaa.dir", "models/model": "bbb.dir"}
    }
