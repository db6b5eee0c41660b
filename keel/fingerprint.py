"""File fingerprints: DVC-compatible md5 and sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_md5", "file_sha256", "tree_md5"]

_CHUNK = 1 << 20


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def file_md5(path: Path) -> str:
    """The md5 of a file's bytes, as DVC 3 records it in `dvc.lock`."""
    return _digest(path, "md5")


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes."""
    return _digest(path, "sha256")


def tree_md5(path: Path) -> str:
    """A stable md5 over a directory's relative file names and contents (or a file's md5)."""
    if path.is_file():
        return file_md5(path)
    h = hashlib.md5()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(item.relative_to(path).as_posix().encode())
        h.update(file_md5(item).encode())
    return h.hexdigest()
