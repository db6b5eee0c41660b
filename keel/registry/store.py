"""A content-addressed artifact store for model bundles (a local folder or any fsspec URL).

A bundle is a folder of a few files (`model.ubj`, `feature_spec.json`, `metadata.json`). Every
file is stored as an object named by its sha256 under `<base>/objects/<sha[:2]>/<sha>`; a
manifest listing the file names, checksums and sizes is stored the same way, and its sha256
identifies the bundle. Every fetch and verification re-computes every checksum, so a changed
byte or a missing object is refused, never silently used.

Objects are written under a temporary name and then moved to their final name, so a crash never
leaves a half-written object where a reader would find it. On a local folder the move is an
atomic rename; on object stores (`s3://`, `gs://`) it is a server-side copy, which only makes the
complete object visible.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from keel.fingerprint import file_sha256

__all__ = [
    "MANIFEST_FORMAT",
    "ArtifactError",
    "ArtifactIntegrityError",
    "ArtifactMissingError",
    "ArtifactStore",
    "BundleRef",
    "sha256_file",
]

MANIFEST_FORMAT = "keel-bundle/1"
"""The `format` field of every manifest this store writes and accepts."""

_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")

sha256_file = file_sha256
"""The sha256 of a local file's bytes (re-exported from `keel.fingerprint`)."""


class ArtifactError(Exception):
    """An artifact cannot be stored or fetched."""


class ArtifactMissingError(ArtifactError):
    """An object or manifest is not in the store."""


class ArtifactIntegrityError(ArtifactError):
    """A stored object's bytes do not match the checksum recorded for it.

    Attributes:
        path: The object's path inside the store's filesystem.
        expected: The recorded sha256.
        actual: The sha256 of the bytes actually found.
    """

    def __init__(self, message: str, *, path: str, expected: str, actual: str) -> None:
        """Create the error.

        Args:
            message: The full, human-readable message.
            path: The object's path inside the store's filesystem.
            expected: The recorded sha256.
            actual: The sha256 of the bytes actually found.
        """
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class BundleRef:
    """A stored bundle.

    Attributes:
        uri: Where the bundle's manifest lives (a full fsspec URL).
        sha256: The sha256 of the manifest's bytes: the bundle's identity.
    """

    uri: str
    sha256: str


@dataclass(frozen=True)
class _Entry:
    """One file of a manifest."""

    name: str
    sha256: str
    size: int


class ArtifactStore:
    """Content-addressed storage of model bundles on a local folder or an fsspec filesystem."""

    def __init__(self, url: str) -> None:
        """Open a store, creating its base folder when it is local.

        Args:
            url: A local folder path, or an fsspec URL (`file:///x`, `memory://x`, `s3://b/p`).
        """
        self._url = url
        fs: Any
        fs, base = fsspec.core.url_to_fs(url)
        self._fs: Any = fs
        self._base: str = base.rstrip("/") or base
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        self._local = "file" in protocols or "local" in protocols
        if self._local:
            self._fs.makedirs(self._base, exist_ok=True)

    @property
    def url(self) -> str:
        """The store's URL (or folder), as given."""
        return self._url

    # ------------------------------------------------------------------ public API

    def has(self, sha256: str) -> bool:
        """Whether an object (file or manifest) with this sha256 is stored.

        Args:
            sha256: A lowercase hex sha256; anything else is simply not stored.

        Returns:
            True when the object exists (its bytes are not verified here).
        """
        if not _SHA256.fullmatch(sha256):
            return False
        return bool(self._fs.exists(self._object_path(sha256)))

    def put_bundle(self, directory: Path) -> BundleRef:
        """Store every file of a bundle folder, then its manifest.

        Objects already stored are not written again, so putting the same content twice returns
        the same reference and rewrites nothing.

        Args:
            directory: A folder holding only regular files (no sub-folders).

        Returns:
            The bundle's reference.

        Raises:
            ArtifactError: The folder is missing, empty, holds a sub-folder or something that is
                not a regular file, or a file changed while it was being stored.
        """
        if not directory.is_dir():
            raise ArtifactError(f"bundle folder not found: {directory}")
        items = sorted(directory.iterdir(), key=lambda p: p.name)
        for item in items:
            if item.is_dir():
                raise ArtifactError(
                    f"bundle {directory} holds a sub-folder ({item.name}); bundles must be flat"
                )
            if not item.is_file():
                raise ArtifactError(f"bundle {directory}: {item.name} is not a regular file")
        if not items:
            raise ArtifactError(f"bundle folder {directory} is empty")
        files: dict[str, dict[str, Any]] = {}
        for item in items:
            sha = sha256_file(item)
            if not self.has(sha):
                self._upload_file(item, sha)
            files[item.name] = {"sha256": sha, "size": item.stat().st_size}
        manifest = _manifest_bytes(files)
        manifest_sha = hashlib.sha256(manifest).hexdigest()
        if not self.has(manifest_sha):
            self._upload_bytes(manifest, manifest_sha)
        return BundleRef(uri=self._uri(manifest_sha), sha256=manifest_sha)

    def get_bundle(self, sha256: str, destination: Path, *, label: str = "") -> Path:
        """Fetch a bundle into `destination`, verifying the manifest and every file.

        Files are fetched into a temporary folder beside `destination`, which is renamed into
        place only once every checksum has matched: after a failure, `destination` holds
        nothing of the bundle.

        Args:
            sha256: The bundle's identity (its manifest's sha256).
            destination: The folder to create; it must be absent or empty.
            label: What the bundle is, for error messages (e.g. "model hotel v3").

        Returns:
            `destination`.

        Raises:
            ArtifactError: `destination` is not an empty folder, or the manifest is malformed.
            ArtifactMissingError: The manifest or a file is not in the store.
            ArtifactIntegrityError: A checksum does not match; the artifact was refused.
        """
        if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
            raise ArtifactError(
                f"cannot fetch {self._what(label, sha256)}: destination {destination} "
                "is not an empty folder"
            )
        entries = self._read_manifest(sha256, label)
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent)
        )
        try:
            for entry in entries:
                with (staging / entry.name).open("wb") as sink:
                    self._stream_verified(
                        entry.sha256, entry.size, f"file {entry.name!r}", sha256, label, sink.write
                    )
            staging.chmod(0o755)
            if destination.exists():
                destination.rmdir()
            staging.rename(destination)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return destination

    def verify_bundle(self, sha256: str, *, label: str = "") -> None:
        """Check the manifest and every file of a bundle without writing anything.

        Args:
            sha256: The bundle's identity (its manifest's sha256).
            label: What the bundle is, for error messages (e.g. "model hotel v3").

        Raises:
            ArtifactError: The manifest is malformed.
            ArtifactMissingError: The manifest or a file is not in the store.
            ArtifactIntegrityError: A checksum does not match; the artifact was refused.
        """
        for entry in self._read_manifest(sha256, label):
            self._stream_verified(
                entry.sha256, entry.size, f"file {entry.name!r}", sha256, label, _discard
            )

    # ------------------------------------------------------------------ layout

    def _object_path(self, sha256: str) -> str:
        return f"{self._base}/objects/{sha256[:2]}/{sha256}"

    def _uri(self, sha256: str) -> str:
        return str(self._fs.unstrip_protocol(self._object_path(sha256)))

    @staticmethod
    def _what(label: str, sha256: str) -> str:
        return label or f"bundle {sha256}"

    # ------------------------------------------------------------------ writing

    def _temp_path(self) -> str:
        folder = f"{self._base}/tmp"
        self._fs.makedirs(folder, exist_ok=True)
        return f"{folder}/{uuid.uuid4().hex}.partial"

    def _commit(self, temp: str, sha256: str) -> None:
        """Move a fully written temporary object to its final name."""
        final = self._object_path(sha256)
        if self._fs.exists(final):  # another writer stored the same content meanwhile
            self._fs.rm_file(temp)
            return
        self._fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        self._fs.mv(temp, final)

    def _discard_temp(self, temp: str) -> None:
        try:
            if self._fs.exists(temp):
                self._fs.rm_file(temp)
        except OSError:  # best effort: the temporary name is never read
            pass

    def _upload_bytes(self, data: bytes, sha256: str) -> None:
        temp = self._temp_path()
        try:
            with self._fs.open(temp, "wb") as handle:
                handle.write(data)
            self._commit(temp, sha256)
        except BaseException:
            self._discard_temp(temp)
            raise

    def _upload_file(self, source: Path, sha256: str) -> None:
        temp = self._temp_path()
        try:
            digest = hashlib.sha256()
            with source.open("rb") as reader, self._fs.open(temp, "wb") as writer:
                for chunk in iter(lambda: reader.read(_CHUNK), b""):
                    digest.update(chunk)
                    writer.write(chunk)
            if digest.hexdigest() != sha256:
                raise ArtifactError(f"{source} changed while it was being stored; try again")
            self._commit(temp, sha256)
        except BaseException:
            self._discard_temp(temp)
            raise

    # ------------------------------------------------------------------ reading

    def _missing(self, label: str, bundle_sha: str, what: str, sha256: str) -> ArtifactMissingError:
        return ArtifactMissingError(
            f"{self._what(label, bundle_sha)}: {what} (sha256 {sha256}) is missing from the "
            f"artifact store {self._url}; the artifact was refused"
        )

    def _read_manifest(self, sha256: str, label: str) -> list[_Entry]:
        if not _SHA256.fullmatch(sha256):
            raise ArtifactError(
                f"{self._what(label, sha256)}: {sha256!r} is not a sha256 bundle identity"
            )
        chunks: list[bytes] = []
        self._stream_verified(sha256, None, "manifest", sha256, label, chunks.append)
        return _parse_manifest(b"".join(chunks), self._what(label, sha256))

    def _stream_verified(
        self,
        sha256: str,
        size_expected: int | None,
        what: str,
        bundle_sha: str,
        label: str,
        sink: Callable[[bytes], object],
    ) -> None:
        """Stream one object to `sink`, then check its sha256 (and its size, when known).

        Args:
            sha256: The object's recorded sha256 (its name in the store).
            size_expected: Its recorded size, or None when unknown (the manifest itself).
            what: What the object is, for messages ("manifest", "file 'model.ubj'").
            bundle_sha: The bundle's identity, for messages without a label.
            label: What the bundle is, for messages.
            sink: Receives the bytes as they are read.

        Raises:
            ArtifactMissingError: The object is not in the store.
            ArtifactIntegrityError: Its sha256 does not match.
            ArtifactError: Its size does not match the manifest.
        """
        path = self._object_path(sha256)
        digest = hashlib.sha256()
        size = 0
        try:
            with self._fs.open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    sink(chunk)
        except FileNotFoundError:
            raise self._missing(label, bundle_sha, what, sha256) from None
        actual = digest.hexdigest()
        if actual != sha256:
            raise ArtifactIntegrityError(
                f"{self._what(label, bundle_sha)}: {what} failed its checksum "
                f"(expected sha256 {sha256}, actual sha256 {actual}); "
                "the artifact was refused because it was changed or corrupted",
                path=path,
                expected=sha256,
                actual=actual,
            )
        if size_expected is not None and size != size_expected:
            raise ArtifactError(
                f"{self._what(label, bundle_sha)}: {what} has {size} bytes but its manifest "
                f"records {size_expected}; the artifact was refused"
            )


def _discard(_chunk: bytes) -> None:
    """A sink that keeps nothing (verification only)."""


def _manifest_bytes(files: dict[str, dict[str, Any]]) -> bytes:
    """The canonical, deterministic bytes of a manifest."""
    document = {"format": MANIFEST_FORMAT, "files": files}
    return json.dumps(document, sort_keys=True, indent=1, ensure_ascii=True).encode("ascii")


def _parse_manifest(data: bytes, what: str) -> list[_Entry]:
    """Parse and validate a manifest's bytes into its file entries."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(f"{what}: the object is not a bundle manifest") from None
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise ArtifactError(f"{what}: the object is not a {MANIFEST_FORMAT} manifest")
    files = document.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{what}: the manifest lists no files")
    entries: list[_Entry] = []
    for name, spec in sorted(files.items()):
        if (
            not isinstance(name, str)
            or name in {"", ".", ".."}
            or any(sep in name for sep in ("/", "\\", "\0", os.sep))
        ):
            raise ArtifactError(f"{what}: the manifest holds an unsafe file name {name!r}")
        sha = spec.get("sha256") if isinstance(spec, dict) else None
        size = spec.get("size") if isinstance(spec, dict) else None
        if (
            not isinstance(sha, str)
            or not _SHA256.fullmatch(sha)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
        ):
            raise ArtifactError(f"{what}: the manifest entry for {name!r} is malformed")
        entries.append(_Entry(name, sha, size))
    return entries
