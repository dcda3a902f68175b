"""One object-store copy of the dataset for a whole Tune study, multi-worker trials included.

``tune.with_parameters`` puts its arguments in the object store once; a multi-worker trial that
passed the dataset it received on to its Ray Train workers had to put it again, one more full copy
per trial. A ``SharedDataset`` is the reference instead: the trial and every one of its workers get
the same stored copy (zero-copy for in-memory pixels; a memory-mapped dataset is only its URI).
"""
from __future__ import annotations

from typing import Union

import ray

from fairtune_ray.data.packed import PackedDataset


class SharedDataset:
    """A dataset put in the Ray object store once, passed around by reference."""

    def __init__(self, data: PackedDataset):
        self.ref = ray.put(data)

    def get(self) -> PackedDataset:
        return ray.get(self.ref)


DatasetArg = Union[PackedDataset, SharedDataset]


def shared(data: DatasetArg) -> SharedDataset:
    return data if isinstance(data, SharedDataset) else SharedDataset(data)


def resolve(data: DatasetArg) -> PackedDataset:
    return data.get() if isinstance(data, SharedDataset) else data
