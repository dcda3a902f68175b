"""Reading packed image shards: one Parquet shard in memory at a time, pixels without per-row copies.

Shared by the in-memory load (data/packed.py) and the node-local copy that is memory-mapped
(data/local_copy.py). A truncated or corrupted shard is a DataError naming the file.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from fairtune_ray.data.manifest import REPREPARE, SHARD_DIR, DataError, filesystem_and_path, read_table


def shard_files(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    fs, path = filesystem_and_path(uri)
    selector = pafs.FileSelector(f"{path}/{SHARD_DIR}", allow_not_found=True)
    files = sorted(fi.path for fi in fs.get_file_info(selector) if fi.path.endswith(".parquet"))
    if not files:
        raise DataError(f"'{uri}/{SHARD_DIR}' holds no packed image shards; {REPREPARE}")
    return fs, files


def iter_shards(uri: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(sample ids, (n, H, W, C) uint8 images) per packed shard, one shard in memory at a time."""
    fs, files = shard_files(uri)
    for file in files:
        t = read_table(fs, file, "the image shard")
        if t.num_rows == 0:
            continue
        h, w, c = (t.column(k)[0].as_py() for k in ("height", "width", "channels"))
        raw = t.column("image").combine_chunks()
        # Binary values are contiguous in the data buffer: one frombuffer, no per-row copies.
        offsets = np.frombuffer(raw.buffers()[1], dtype=np.int32)[raw.offset: raw.offset + len(raw) + 1]
        data = np.frombuffer(raw.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
        if data.size != len(raw) * h * w * c:
            raise DataError(f"the image shard '{file}' holds {data.size} bytes of pixels where its {len(raw)} "
                            f"images of {h}x{w}x{c} need {len(raw) * h * w * c}; {REPREPARE}")
        yield t.column("sample_id").to_numpy(), data.reshape(len(raw), h, w, c)


def manifest_positions(manifest: pd.DataFrame, ids: np.ndarray, uri: str) -> np.ndarray:
    """Rows of the manifest holding sample ``ids`` (a shard's images), checked to exist."""
    order = pd.Series(np.arange(len(manifest)), index=manifest["sample_id"].to_numpy())
    found = order.reindex(ids)
    if found.isna().any():
        raise DataError(f"'{uri}': the shards hold images whose sample_id is not in the manifest, e.g. "
                        f"{ids[found.isna().to_numpy()][:5].tolist()}; {REPREPARE}")
    return found.to_numpy(dtype=np.int64)


def check_all_filled(filled: np.ndarray, manifest: pd.DataFrame, uri: str) -> None:
    if not filled.all():
        missing = manifest["sample_id"].to_numpy()[~filled]
        raise DataError(f"'{uri}': {len(missing)} manifest rows have no packed image, e.g. {missing[:5].tolist()}; "
                        f"{REPREPARE}")


