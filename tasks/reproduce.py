"""Re-create a registered version from its lineage and prove it is the same model."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from keel.config import load_params
from keel.fingerprint import file_md5, file_sha256
from keel.layout import ProjectPaths
from keel.model import load_bundle
from keel.registry import repository as repo
from tasks.registry import Registry, fetched_bundle, gate_frames, predict_known

__all__ = ["ReproduceError", "Reproduction", "reproduce_version"]

STAGES_TO_MODEL = ("ingest", "validate", "featurize", "train")


class ReproduceError(RuntimeError):
    """The version cannot be re-created, or the re-creation differs; the message says how."""


@dataclass(frozen=True)
class Reproduction:
    """What `keel models reproduce` proved."""

    version: int
    proof: str  # "identical model bytes" or "identical predictions"
    commit: str
    dirty: bool
    max_abs_diff: float
    rows_compared: int


def _checkout(root: Path, commit: str, into: Path) -> None:
    """Extract the commit's whole tree. From the repository's top level: a project folder that
    git ignores (the replay's `.keel/replay/<strategy>`) is inside the repository but git
    refuses to archive from it ("current working directory is untracked")."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit],
            cwd=top,
            capture_output=True,
            check=True,
        ).stdout
    except subprocess.CalledProcessError as exc:
        stderr = exc.stderr if isinstance(exc.stderr, str) else exc.stderr.decode()
        raise ReproduceError(f"cannot check out commit {commit[:12]}: {stderr.strip()}") from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def _source_with_md5(root: Path, workdir: Path, relative: str, md5: str) -> None:
    """Put the recorded data snapshot in place: from the commit, the project, or DVC's cache."""
    target = workdir / relative
    candidates = [target, root / relative, root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]]
    for candidate in candidates:
        if candidate.is_file() and file_md5(candidate) == md5:
            if candidate != target:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(candidate.read_bytes())
            return
    raise ReproduceError(
        f"the data snapshot {relative} (md5 {md5}) is neither in the commit, the project, "
        "nor the DVC cache; restore it (e.g. `dvc pull`) and retry"
    )


def reproduce_version(
    root: Path, registry: Registry, model_name: str, version: int
) -> Reproduction:
    """Rebuild `version` from its commit, params and data snapshot, and compare.

    The stages run in a fresh checkout of the recorded commit, with that commit's code (the
    checkout comes first on `sys.path`), the recorded params and the recorded source file.

    Raises:
        ReproduceError: No commit recorded, data missing, or the result differs.
    """
    with registry.session() as session:
        row = repo.get_version(session, model_name, version)
    commit = row.code_version.get("commit")
    if not commit:
        raise ReproduceError(f"{model_name} v{version} has no recorded git commit")
    params = row.params
    source = params["ingest"]["source"]
    with tempfile.TemporaryDirectory(prefix="keel-reproduce-") as tmp:
        workdir = Path(tmp) / "project"
        workdir.mkdir()
        _checkout(root, commit, workdir)
        (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        _source_with_md5(root, workdir, source, row.fingerprints["source_md5"])
        for stage in STAGES_TO_MODEL:
            done = subprocess.run(
                [sys.executable, "-m", "flows.cli", "stage", stage],
                cwd=workdir,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise ReproduceError(f"stage '{stage}' failed while reproducing: {done.stderr}")
        rebuilt = ProjectPaths(workdir).model_dir
        with fetched_bundle(registry, row) as original:
            if file_sha256(original / "model.ubj") == file_sha256(rebuilt / "model.ubj"):
                proof, diff, rows = "identical model bytes", 0.0, 0
            else:
                recorded = load_params(workdir / "params.yaml")
                window, pool = gate_frames(workdir, recorded)
                target = recorded.data.target
                a = predict_known(load_bundle(original), window, pool, target)
                b = predict_known(load_bundle(rebuilt), window, pool, target)
                diff, rows = float(np.max(np.abs(a - b))) if len(a) else 0.0, len(a)
                if diff > 1e-6:
                    raise ReproduceError(
                        f"{model_name} v{version} was NOT reproduced: model bytes differ and "
                        f"predictions on {rows} evaluation rows differ by up to {diff:.3g}"
                    )
                proof = "identical predictions"
    return Reproduction(version, proof, commit, bool(row.code_version.get("dirty")), diff, rows)
