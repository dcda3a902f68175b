"""A node-local, uncompressed copy of a prepared dataset's pixels, for memory mapping.

Packed shards are compressed Parquet (local or ``s3://``), which cannot be mapped. The first
process of a node that needs the images streams the shards, one at a time, into one raw
(N, H, W, C) uint8 file under ``data.local_dir`` (default: the system temp folder), in manifest
order; every other process of the node waits on a file lock and then maps the same file. The copy
is keyed by the dataset's URI and the identity of its files (names, sizes, modification times), so
a re-prepared dataset gets a new copy, and it appears under its final name only when complete.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from fairtune_ray.data.manifest import INFO_FILE, MANIFEST_FILE, DataError, filesystem_and_path, load_manifest
from fairtune_ray.data.shards import check_all_filled, iter_shards, manifest_positions, shard_files

PIXELS_FILE = "pixels.u8"
SHAPE_FILE = "shape.json"


def default_local_root() -> str:
    return os.path.join(tempfile.gettempdir(), "fairtune-ray-data")


def copy_key(uri: str) -> str:
    """Identity of the dataset's files: a changed manifest or shard gives another copy."""
    fs, path = filesystem_and_path(uri)
    _, shards = shard_files(uri)
    entries = []
    for info in fs.get_file_info([f"{path}/{MANIFEST_FILE}", f"{path}/{INFO_FILE}", *shards]):
        mtime = info.mtime_ns if info.mtime_ns is not None else ""
        entries.append(f"{info.path}|{info.size}|{mtime}")
    h = hashlib.sha256("\n".join([uri if "://" in uri else path, *entries]).encode())
    return h.hexdigest()[:16]


def ensure_local_copy(uri: str, local_root: str) -> tuple[str, tuple[int, ...]]:
    """Path and shape of this node's raw pixel file for ``uri``, built once (under a file lock)."""
    folder = Path(local_root).expanduser() / copy_key(uri)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            shape = _complete_copy(folder)
            if shape is None:
                shape = _build(uri, folder)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return str(folder / PIXELS_FILE), shape


def _complete_copy(folder: Path):
    shape_file, pixels = folder / SHAPE_FILE, folder / PIXELS_FILE
    if not (shape_file.exists() and pixels.exists()):
        return None
    shape = tuple(json.loads(shape_file.read_text())["shape"])
    if pixels.stat().st_size != int(np.prod(shape, dtype=np.int64)):
        return None  # a copy cut short (a full disk): build it again
    return shape


def _build(uri: str, folder: Path) -> tuple[int, ...]:
    """Stream the shards into the raw file with positional writes (never mapping it while writing, so
    the builder's resident memory stays one shard, whatever the dataset's size)."""
    manifest, _ = load_manifest(uri)
    if not len(manifest):
        raise DataError(f"'{uri}/{MANIFEST_FILE}' has no rows")
    partial = folder / f"{PIXELS_FILE}.partial"
    shape = None  # a raw file without header, mapped by the shape recorded beside it
    filled = np.zeros(len(manifest), dtype=bool)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for ids, chunk in iter_shards(uri):
            if shape is None:
                shape = (len(manifest), *chunk.shape[1:])
                os.ftruncate(fd, int(np.prod(shape, dtype=np.int64)))
            elif chunk.shape[1:] != shape[1:]:
                raise DataError(f"'{uri}': shard images are {chunk.shape[1:]}, others {shape[1:]}; "
                                "re-run `fairtune-ray data prepare` to rebuild the dataset")
            pos = manifest_positions(manifest, ids, uri)
            _write_rows(fd, pos, chunk)
            filled[pos] = True
        check_all_filled(filled, manifest, uri)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, folder / PIXELS_FILE)
    (folder / SHAPE_FILE).write_text(json.dumps({"shape": list(shape), "uri": uri}))
    return shape


def _write_rows(fd: int, positions: np.ndarray, images: np.ndarray) -> None:
    """Images to their manifest rows: one write when the shard's rows are consecutive (as written by
    ``write_packed_dataset``), else one per image."""
    row_bytes = int(np.prod(images.shape[1:], dtype=np.int64))
    if len(positions) and np.array_equal(positions, np.arange(positions[0], positions[0] + len(positions))):
        os.pwrite(fd, np.ascontiguousarray(images).data, int(positions[0]) * row_bytes)
        return
    for p, img in zip(positions, images):
        os.pwrite(fd, np.ascontiguousarray(img).data, int(p) * row_bytes)
