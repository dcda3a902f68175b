"""Pixels addressed by row: splits without copies, the node-local memory-mapped copy, damaged files."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from fairtune_ray.config import DataConfig
from fairtune_ray.data.loading import make_loader, split_tensors, storage_for
from fairtune_ray.data.local_copy import PIXELS_FILE, copy_key
from fairtune_ray.data.manifest import DataError, DatasetInfo, write_packed_dataset
from fairtune_ray.data.packed import PackedDataset, load_packed_dataset
from fairtune_ray.data.pixels import ImageRows

N, SIZE = 60, 8


def _write(path, seed=0, shard_size=16) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(N, SIZE, SIZE, 3), dtype=np.uint8)
    manifest = pd.DataFrame({"sample_id": np.arange(N) * 7 + 3, "image": [f"{i}.png" for i in range(N)],
                             "label": np.arange(N) % 2, "sex": (np.arange(N) // 2) % 2,
                             "patient_id": [f"p{i}" for i in range(N)],
                             "split": np.array(["train", "val", "test"])[np.arange(N) % 3]})
    info = DatasetInfo(name="toy", attributes={"sex": {0: "F", 1: "M"}})
    write_packed_dataset(str(path), manifest, iter(images), info, shard_size=shard_size)
    return str(path), images


def test_splits_select_rows_without_copying_pixels(tmp_path):
    uri, images = _write(tmp_path / "ds")
    data = load_packed_dataset(uri)
    train = data.split("train")
    assert train.images.store is data.images.store  # the same array, narrowed by row
    np.testing.assert_array_equal(np.asarray(train.images), images[0::3])
    np.testing.assert_array_equal(train.images[[1, 0]], images[[3, 0]])


def test_a_subset_travels_compacted_and_a_mapped_dataset_as_its_uri(tmp_path):
    uri, images = _write(tmp_path / "ds")
    memory = load_packed_dataset(uri)
    no_test = pickle.loads(pickle.dumps(memory.only(("train", "val"))))
    assert len(no_test.images.store) == 40  # the test rows' pixels stayed behind
    mapped = load_packed_dataset(uri, storage="mapped", local_root=str(tmp_path / "local"))
    assert len(pickle.dumps(mapped.images)) < 1000 < images.nbytes  # its URI and row indices, not the pixels
    back = pickle.loads(pickle.dumps(mapped.split("val")))
    np.testing.assert_array_equal(np.asarray(back.images), images[1::3])


def test_the_mapped_copy_is_built_once_per_dataset_and_rebuilt_when_damaged(tmp_path):
    uri, images = _write(tmp_path / "ds")
    local = tmp_path / "local"
    first = load_packed_dataset(uri, storage="mapped", local_root=str(local))
    np.testing.assert_array_equal(np.asarray(first.images), images)
    pixels = local / copy_key(uri) / PIXELS_FILE
    built = pixels.stat().st_mtime_ns
    load_packed_dataset(uri, storage="mapped", local_root=str(local))
    assert pixels.stat().st_mtime_ns == built  # mapped again, not rebuilt
    with open(pixels, "r+b") as f:  # a copy cut short
        f.truncate(100)
    again = load_packed_dataset(uri, storage="mapped", local_root=str(local))
    np.testing.assert_array_equal(np.asarray(again.images), images)


def test_a_reprepared_dataset_gets_a_new_local_copy(tmp_path):
    uri, _ = _write(tmp_path / "ds")
    key = copy_key(uri)
    _, images = _write(tmp_path / "ds2", seed=1)
    (tmp_path / "ds").rename(tmp_path / "old")
    (tmp_path / "ds2").rename(tmp_path / "ds")
    assert copy_key(uri) != key
    data = load_packed_dataset(uri, storage="mapped", local_root=str(tmp_path / "local"))
    np.testing.assert_array_equal(np.asarray(data.images), images)


def test_storage_auto_keeps_small_data_in_memory_and_maps_large_data():
    cfg = DataConfig(memory_limit_mb=1)
    assert storage_for(cfg, 2**20) == "memory" and storage_for(cfg, 2**20 + 1) == "mapped"
    assert storage_for(DataConfig(storage="mapped"), 10) == "mapped"


class _PerSample(torch.utils.data.Dataset):
    """The former data path: one (C, H, W) tensor per sample, stacked by the default collate."""

    def __init__(self, images, labels, groups):
        self.images, self.labels, self.groups = images, labels, groups

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]).permute(2, 0, 1), self.labels[i], self.groups[i]


def test_batches_are_slices_of_the_store_equal_to_per_sample_collation(tmp_path):
    uri, images = _write(tmp_path / "ds")
    for storage in ("memory", "mapped"):
        data = load_packed_dataset(uri, storage=storage, local_root=str(tmp_path / "local"))
        split = split_tensors(data, "train", "sex")
        batches = list(make_loader(split, 7, train=True, seed=3))
        former = list(torch.utils.data.DataLoader(_PerSample(images[0::3], split.labels, split.groups), batch_size=7,
                                                  shuffle=True, generator=torch.Generator().manual_seed(3)))
        assert len(batches) == len(former) == 3
        for (x, y, g), (x0, y0, g0) in zip(batches, former):
            assert x.dtype == torch.uint8 and x.shape[1:] == (3, SIZE, SIZE) and x.is_contiguous()
            assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(g, g0)


def test_in_memory_arrays_are_wrapped():
    data = PackedDataset(pd.DataFrame({"split": ["train"]}), np.zeros((1, 2, 2, 3), np.uint8), DatasetInfo("x", {}))
    assert isinstance(data.images, ImageRows) and data.images.shape == (1, 2, 2, 3)


@pytest.mark.parametrize("damage", ["manifest", "info", "shard"])
def test_a_damaged_file_is_an_error_that_names_it(tmp_path, damage):
    uri, _ = _write(tmp_path / "ds")
    if damage == "manifest":
        path = tmp_path / "ds" / "manifest.parquet"
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "info":
        path = tmp_path / "ds" / "dataset.json"
        path.write_text(json.dumps({"name": "toy"})[:-3])
    else:
        path = sorted((tmp_path / "ds" / "shards").iterdir())[1]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for storage in ("memory", "mapped"):
        with pytest.raises(DataError) as err:
            load_packed_dataset(uri, storage=storage, local_root=str(tmp_path / "local"))
        assert str(path) in str(err.value) and "data prepare" in str(err.value)


def test_shard_rows_in_any_order_land_on_their_manifest_rows(tmp_path):
    import pyarrow.parquet as pq

    uri, images = _write(tmp_path / "ds")
    shard = sorted((tmp_path / "ds" / "shards").iterdir())[0]
    table = pq.read_table(shard)
    pq.write_table(table.take(list(range(table.num_rows))[::-1]), shard)  # rows no longer consecutive
    for storage in ("memory", "mapped"):
        data = load_packed_dataset(uri, storage=storage, local_root=str(tmp_path / "local"))
        np.testing.assert_array_equal(np.asarray(data.images), images)
