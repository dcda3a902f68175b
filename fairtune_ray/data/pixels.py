"""A prepared dataset's pixels, addressed by row and never copied whole.

Two stores hold the (N, H, W, C) uint8 images of a dataset in manifest order:

* an in-memory ``numpy`` array, for data that fit comfortably (the embedded dataset, most
  dermatology and fundus sets): fastest, and one Ray object-store copy serves every trial of a node;
* ``MappedImages``, a node-local uncompressed copy of the packed shards, memory-mapped
  (``data/local_copy.py``): for CheXpert- or MIMIC-sized data. Every process of a node maps the same
  file, so they share one copy in the page cache, and the kernel pages images in and out as batches
  touch them: a dataset larger than the node's memory trains with bounded memory. It pickles as its
  source URI, so a task on another node builds (once) and maps that node's own copy.

``ImageRows`` selects rows of either store (a split, a subset) by index, without copying; a batch
is gathered from the store when it is drawn.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np

from fairtune_ray.data.local_copy import ensure_local_copy


class MappedImages:
    """The images of a prepared dataset at ``uri``, memory-mapped from a node-local copy."""

    def __init__(self, uri: str, local_root: str):
        self.uri, self.local_root = uri, local_root
        self._array: Optional[np.memmap] = None

    @property
    def array(self) -> np.memmap:
        if self._array is None:
            path, shape = ensure_local_copy(self.uri, self.local_root)
            self._array = np.memmap(path, dtype=np.uint8, mode="r", shape=shape)
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        return self.array[key]

    def __getstate__(self) -> dict:  # the URI travels, never the pixels
        return {"uri": self.uri, "local_root": self.local_root}

    def __setstate__(self, state: dict) -> None:
        self.uri, self.local_root, self._array = state["uri"], state["local_root"], None


ImageStore = Union[np.ndarray, MappedImages]


class ImageRows:
    """Rows ``rows`` of an image store (all rows when None), as an array-like of shape (n, H, W, C).

    Indexing gathers the requested images only (a batch, a sample); ``select`` narrows the rows
    without reading any pixel; ``np.asarray`` materialises the selected rows (small subsets only).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, store: ImageStore, rows: Optional[np.ndarray] = None):
        self.store = store
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.store) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.store.shape[1:])

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def mapped(self) -> bool:
        return isinstance(self.store, MappedImages)

    def positions(self, key=slice(None)) -> np.ndarray:
        """Store positions of the selected rows ``key`` (an index, slice, index array or boolean mask)."""
        every = np.arange(len(self.store), dtype=np.int64) if self.rows is None else self.rows
        return every[key]

    def select(self, key) -> "ImageRows":
        return ImageRows(self.store, self.positions(key))

    def __getitem__(self, key) -> np.ndarray:
        if self.rows is None and isinstance(key, (int, np.integer, slice)):
            return self.store[key]
        return self.store[self.positions(key)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.asarray(self.store[:] if self.rows is None else self.store[self.rows])
        return out if dtype is None else out.astype(dtype)

    def __reduce__(self):
        # A subset of an in-memory store travels compacted: a task given the train and validation
        # rows receives their pixels alone. A mapped store travels as its URI, with the row indices.
        if isinstance(self.store, np.ndarray) and self.rows is not None:
            return ImageRows, (np.ascontiguousarray(self.store[self.rows]),)
        return ImageRows, (self.store, self.rows)
