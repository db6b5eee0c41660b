"""The content-addressed artifact store, on a local folder, a file:// URL and memory://."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from keel.registry.store import (
    MANIFEST_FORMAT,
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactMissingError,
    ArtifactStore,
    BundleRef,
)

LABEL = "model hotel v7"
MODEL_BYTES = bytes(range(256)) * 40 + b"\x00\xff\x00"  # binary, every byte value
FILES = {
    "model.ubj": MODEL_BYTES,
    "feature_spec.json": b'{"columns": ["lead_time", "adr"]}\n',
    "metadata.json": b'{"version": 7, "note": "caf\\u00e9"}\n',
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["path", "file-url", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "path":
        yield ArtifactStore(str(tmp_path / "store"))
    elif request.param == "file-url":
        yield ArtifactStore(f"file://{tmp_path / 'store'}")
    else:
        url = f"memory://keel-test-{uuid.uuid4().hex}"
        yield ArtifactStore(url)
        fs, base = fsspec.core.url_to_fs(url)
        if fs.exists(base):
            fs.rm(base, recursive=True)


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    return folder


def fs_of(store: ArtifactStore) -> tuple[Any, str]:
    """The store's filesystem and base path, opened independently from its public URL."""
    fs, base = fsspec.core.url_to_fs(store.url)
    return fs, base.rstrip("/")


def object_path(store: ArtifactStore, digest: str) -> str:
    """The documented layout: <base>/objects/<sha[:2]>/<sha>."""
    return f"{fs_of(store)[1]}/objects/{digest[:2]}/{digest}"


def tamper(store: ArtifactStore, digest: str, offset: int) -> None:
    """Flip one byte of a stored object."""
    fs = fs_of(store)[0]
    path = object_path(store, digest)
    data = bytearray(fs.cat_file(path))
    data[offset] ^= 0x01
    fs.pipe_file(path, bytes(data))


def all_files(store: ArtifactStore) -> list[str]:
    fs, base = fs_of(store)
    return sorted(fs.find(base))


def test_round_trip_keeps_every_byte(store: ArtifactStore, bundle: Path, tmp_path: Path) -> None:
    ref = store.put_bundle(bundle)
    assert isinstance(ref, BundleRef)
    assert len(ref.sha256) == 64 and ref.uri.endswith(f"/objects/{ref.sha256[:2]}/{ref.sha256}")
    assert "://" in ref.uri
    assert store.has(ref.sha256) and all(store.has(sha(d)) for d in FILES.values())
    out = store.get_bundle(ref.sha256, tmp_path / "out", label=LABEL)
    assert out == tmp_path / "out"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == FILES
    store.verify_bundle(ref.sha256, label=LABEL)  # no error


def test_manifest_is_deterministic_and_describes_the_files(
    store: ArtifactStore, bundle: Path
) -> None:
    ref = store.put_bundle(bundle)
    raw = fs_of(store)[0].cat_file(object_path(store, ref.sha256))
    assert sha(raw) == ref.sha256
    manifest = json.loads(raw)
    assert manifest == {
        "format": MANIFEST_FORMAT,
        "files": {n: {"sha256": sha(d), "size": len(d)} for n, d in FILES.items()},
    }
    assert raw == json.dumps(manifest, sort_keys=True, indent=1).encode()


def test_get_into_existing_empty_destination(
    store: ArtifactStore, bundle: Path, tmp_path: Path
) -> None:
    ref = store.put_bundle(bundle)
    empty = tmp_path / "deep" / "empty"
    empty.mkdir(parents=True)
    store.get_bundle(ref.sha256, empty)
    assert sorted(p.name for p in empty.iterdir()) == sorted(FILES)
    assert [p.name for p in empty.parent.iterdir()] == ["empty"]  # no staging folder left


def test_identical_content_gives_the_same_ref_and_rewrites_nothing(
    store: ArtifactStore, bundle: Path, tmp_path: Path
) -> None:
    ref = store.put_bundle(bundle)
    fs = fs_of(store)[0]
    local = isinstance(fs.protocol, tuple) and "file" in fs.protocol
    stamps: dict[str, object] = {}
    for path in all_files(store):
        if local:
            os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # far in the past
        info = fs.info(path)
        stamps[path] = info.get("mtime", info.get("created"))
    # The same content in another folder (names and bytes identical) is the same bundle.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, data in FILES.items():
        (copy / name).write_bytes(data)
    assert store.put_bundle(bundle) == ref
    assert store.put_bundle(copy) == ref
    after = {}
    for path in all_files(store):
        info = fs.info(path)
        after[path] = info.get("mtime", info.get("created"))
    assert after == stamps


def test_different_content_or_names_give_a_different_sha(
    store: ArtifactStore, bundle: Path
) -> None:
    first = store.put_bundle(bundle)
    (bundle / "metadata.json").write_bytes(b'{"version": 8}\n')
    second = store.put_bundle(bundle)
    assert second.sha256 != first.sha256
    (bundle / "metadata.json").rename(bundle / "meta.json")
    third = store.put_bundle(bundle)
    assert third.sha256 not in {first.sha256, second.sha256}
    # Every version stays retrievable side by side.
    for ref in (first, second, third):
        store.verify_bundle(ref.sha256)


@pytest.mark.parametrize("offset", [0, 1000, len(MODEL_BYTES) - 1])
def test_one_changed_byte_is_refused(
    store: ArtifactStore, bundle: Path, tmp_path: Path, offset: int
) -> None:
    ref = store.put_bundle(bundle)
    model_sha = sha(MODEL_BYTES)
    tamper(store, model_sha, offset)
    destination = tmp_path / "out"
    with pytest.raises(ArtifactIntegrityError) as caught:
        store.get_bundle(ref.sha256, destination, label=LABEL)
    error = caught.value
    message = str(error)
    assert LABEL in message and "model.ubj" in message and "refused" in message
    assert error.expected == model_sha and error.expected in message
    assert error.actual != error.expected and error.actual in message
    assert error.path.endswith(model_sha)
    assert not destination.exists()
    assert list(tmp_path.glob(".out*")) == []  # no staging folder left beside it
    with pytest.raises(ArtifactIntegrityError) as again:
        store.verify_bundle(ref.sha256, label=LABEL)
    assert LABEL in str(again.value) and model_sha in str(again.value)
    assert again.value.actual in str(again.value)


def test_failure_leaves_an_existing_empty_destination_empty(
    store: ArtifactStore, bundle: Path, tmp_path: Path
) -> None:
    ref = store.put_bundle(bundle)
    tamper(store, sha(FILES["metadata.json"]), 3)
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(ArtifactIntegrityError, match=r"metadata\.json"):
        store.get_bundle(ref.sha256, destination, label=LABEL)
    assert destination.is_dir() and list(destination.iterdir()) == []
    assert list(tmp_path.glob(".out*")) == []  # no staging folder left beside it


def test_tampered_manifest_is_refused(store: ArtifactStore, bundle: Path, tmp_path: Path) -> None:
    ref = store.put_bundle(bundle)
    fs = fs_of(store)[0]
    path = object_path(store, ref.sha256)
    original = fs.cat_file(path)
    # Still valid JSON, pointing at other (real) content: only the checksum can catch it.
    fs.pipe_file(path, original.replace(b"model.ubj", b"model.ubk"))
    for call in (
        lambda: store.verify_bundle(ref.sha256, label=LABEL),
        lambda: store.get_bundle(ref.sha256, tmp_path / "out", label=LABEL),
    ):
        with pytest.raises(ArtifactIntegrityError) as caught:
            call()
        message = str(caught.value)
        assert "manifest" in message and LABEL in message
        assert ref.sha256 in message and sha(fs.cat_file(path)) in message
    assert not (tmp_path / "out").exists()


def test_deleted_object_is_missing(store: ArtifactStore, bundle: Path, tmp_path: Path) -> None:
    ref = store.put_bundle(bundle)
    spec_sha = sha(FILES["feature_spec.json"])
    fs_of(store)[0].rm_file(object_path(store, spec_sha))
    assert not store.has(spec_sha)
    with pytest.raises(ArtifactMissingError) as caught:
        store.get_bundle(ref.sha256, tmp_path / "out", label=LABEL)
    message = str(caught.value)
    assert LABEL in message and spec_sha in message and "feature_spec.json" in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(ArtifactMissingError, match=LABEL):
        store.verify_bundle(ref.sha256, label=LABEL)
    # The manifest itself gone is missing too.
    fs_of(store)[0].rm_file(object_path(store, ref.sha256))
    with pytest.raises(ArtifactMissingError, match=f"{LABEL}: manifest"):
        store.verify_bundle(ref.sha256, label=LABEL)


def test_unknown_sha_is_missing(store: ArtifactStore, tmp_path: Path) -> None:
    unknown = sha(b"never stored")
    assert not store.has(unknown)
    with pytest.raises(ArtifactMissingError, match=unknown):
        store.verify_bundle(unknown, label=LABEL)
    with pytest.raises(ArtifactMissingError, match=LABEL):
        store.get_bundle(unknown, tmp_path / "out", label=LABEL)
    assert not (tmp_path / "out").exists()
    # Without a label the message still names the bundle.
    with pytest.raises(ArtifactMissingError, match=unknown):
        store.verify_bundle(unknown)


def test_malformed_sha_is_rejected(store: ArtifactStore, tmp_path: Path) -> None:
    assert not store.has("../../etc/passwd")
    for bad in ("../../etc/passwd", "ABC", sha(b"x").upper(), ""):
        with pytest.raises(ArtifactError, match="not a sha256"):
            store.verify_bundle(bad)


def test_a_file_object_is_not_a_bundle(store: ArtifactStore, bundle: Path, tmp_path: Path) -> None:
    store.put_bundle(bundle)
    with pytest.raises(ArtifactError, match="not a bundle manifest"):
        store.get_bundle(sha(MODEL_BYTES), tmp_path / "out", label=LABEL)
    assert not (tmp_path / "out").exists()


def test_sub_folder_in_bundle_is_rejected_before_anything_is_written(
    store: ArtifactStore, bundle: Path
) -> None:
    (bundle / "nested").mkdir()
    (bundle / "nested" / "x.bin").write_bytes(b"\x01")
    with pytest.raises(ArtifactError, match="sub-folder"):
        store.put_bundle(bundle)
    assert [p for p in all_files(store) if "/objects/" in p] == []


def test_missing_or_empty_bundle_folder_is_rejected(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        store.put_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="empty"):
        store.put_bundle(tmp_path / "empty")


def test_destination_must_be_absent_or_empty(
    store: ArtifactStore, bundle: Path, tmp_path: Path
) -> None:
    ref = store.put_bundle(bundle)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not an empty folder"):
        store.get_bundle(ref.sha256, busy, label=LABEL)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert (busy / "keep.txt").read_text() == "mine"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ArtifactError, match="not an empty folder"):
        store.get_bundle(ref.sha256, a_file)


def test_no_temporary_files_remain_after_put(store: ArtifactStore, bundle: Path) -> None:
    ref = store.put_bundle(bundle)
    store.put_bundle(bundle)
    expected = {sha(d) for d in FILES.values()} | {ref.sha256}
    files = all_files(store)
    assert {p.rsplit("/", 1)[1] for p in files} == expected
    assert all(object_path(store, p.rsplit("/", 1)[1]) == p for p in files)


def test_local_store_creates_its_folder(tmp_path: Path) -> None:
    base = tmp_path / "a" / "b" / "store"
    store = ArtifactStore(str(base))
    assert base.is_dir() and store.url == str(base)


def test_interrupted_write_leaves_no_object_under_its_final_name(
    store: ArtifactStore, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = fs_of(store)[0]  # fsspec caches instances: this is the store's filesystem

    def crash(*_args: object, **_kwargs: object) -> None:
        raise OSError("simulated crash before the move")

    monkeypatch.setattr(fs, "mv", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.put_bundle(bundle)
    assert not any(store.has(sha(d)) for d in FILES.values())
    assert [p for p in all_files(store) if "/objects/" in p or p.endswith(".partial")] == []
    monkeypatch.undo()
    ref = store.put_bundle(bundle)  # a later put completes normally
    store.verify_bundle(ref.sha256)
