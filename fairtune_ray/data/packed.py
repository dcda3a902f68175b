"""A prepared dataset in a process: its manifest and its pixels, in memory or memory-mapped."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np
import pandas as pd

from fairtune_ray.data.local_copy import default_local_root
from fairtune_ray.data.manifest import DataError, DatasetInfo, load_manifest
from fairtune_ray.data.pixels import ImageRows, MappedImages
from fairtune_ray.data.shards import check_all_filled, iter_shards, manifest_positions

if TYPE_CHECKING:
    from fairtune_ray.data.groups import GroupCoding


@dataclass
class PackedDataset:
    """A prepared dataset: manifest rows aligned with (N, H, W, C) uint8 images.

    ``images`` is an ``ImageRows`` view (data/pixels.py): in memory or memory-mapped from a node-local
    copy; ``split`` and ``only`` narrow the rows without copying pixels. ``groups``: the study's group
    coding, computed on the whole dataset by ``load_dataset`` (data/groups.py); the narrowed rows keep it.
    """

    manifest: pd.DataFrame
    images: ImageRows
    info: DatasetInfo
    groups: Optional["GroupCoding"] = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, ImageRows):
            self.images = ImageRows(np.asarray(self.images, dtype=np.uint8))

    def split(self, name: str) -> "PackedDataset":
        return self._rows((self.manifest["split"] == name).to_numpy())

    def only(self, splits: Iterable[str]) -> "PackedDataset":
        """The rows of ``splits`` only: what a decision taken before the final test may see."""
        return self._rows(self.manifest["split"].isin(list(splits)).to_numpy())

    def _rows(self, mask: np.ndarray) -> "PackedDataset":
        return PackedDataset(self.manifest[mask].reset_index(drop=True), self.images.select(mask), self.info,
                             self.groups)


def load_packed_dataset(uri: str, storage: str = "memory", local_root: Optional[str] = None) -> PackedDataset:
    """The prepared dataset at ``uri`` (local or remote), images in manifest order.

    ``storage="memory"`` reads every shard into one array; ``"mapped"`` maps a node-local uncompressed
    copy (built once per node from the shards, data/local_copy.py) and reads no pixel now.
    """
    manifest, info = load_manifest(uri)
    if storage == "mapped":
        store = MappedImages(uri, local_root or default_local_root())
        if len(store) != len(manifest):  # builds (or checks) this node's copy now: errors surface here
            raise DataError(f"'{uri}': the local copy holds {len(store)} images for {len(manifest)} manifest rows")
        return PackedDataset(manifest, ImageRows(store), info)
    if storage != "memory":
        raise ValueError(f"storage must be 'memory' or 'mapped', got {storage!r}")
    images: Optional[np.ndarray] = None
    filled = np.zeros(len(manifest), dtype=bool)
    for ids, chunk in iter_shards(uri):
        if images is None:
            images = np.empty((len(manifest), *chunk.shape[1:]), dtype=np.uint8)
        pos = manifest_positions(manifest, ids, uri)
        images[pos] = chunk
        filled[pos] = True
    check_all_filled(filled, manifest, uri)
    return PackedDataset(manifest, ImageRows(images), info)
