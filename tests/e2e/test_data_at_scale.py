"""A search on a dataset larger than the Ray object store it is given: the images are memory-mapped
from the node-local copy (``data.storage: mapped``), never put in the object store."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ray

from fairtune_ray.config import load_config
from fairtune_ray.data.manifest import DatasetInfo, write_packed_dataset
from fairtune_ray.study import run_search

N, PX = 1000, 256  # 1000 x 256 x 256 x 3 = 197 MB of pixels
STORE_MB = 100


def _write_large_dataset(path) -> None:
    """Smooth images (cheap to compress) whose brightness tracks the label, so the AUCs are defined."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, N)
    groups = np.arange(N) % 2
    ramp = np.linspace(0, 1, PX, dtype=np.float32)[None, :, None]

    def images():
        for y in labels:
            level = 60 + 80 * y + rng.integers(-30, 30)
            yield np.broadcast_to(level * (0.5 + ramp), (PX, PX, 3)).astype(np.uint8)

    split = np.array(["train", "train", "train", "val", "test"])[np.arange(N) % 5]
    manifest = pd.DataFrame({"sample_id": np.arange(N), "image": [f"{i}.png" for i in range(N)], "label": labels,
                             "sex": groups, "patient_id": np.arange(N).astype(str), "split": split})
    info = DatasetInfo(name="large", attributes={"sex": {0: "F", 1: "M"}})
    write_packed_dataset(str(path), manifest, images(), info, shard_size=128)


@pytest.mark.slow
def test_a_search_on_data_larger_than_the_object_store_completes(tiny_overrides, tmp_path, ray_stopped):
    _write_large_dataset(tmp_path / "large")
    cfg = load_config(None, overrides={
        **tiny_overrides, "data.source": str(tmp_path / "large"), "data.sensitive_attribute": "sex",
        "data.local_dir": str(tmp_path / "local"), "data.memory_limit_mb": STORE_MB, "data.augment": False,
        "data.eval_batch_size": 128, "train.epochs": 1, "search.num_samples": 2, "search.max_concurrent": 2,
        "search.n_initial_points": 2, "search.export": "none"})
    assert cfg.data.storage == "auto"  # 197 MB > memory_limit_mb: mapped
    ray.init(num_cpus=2, object_store_memory=STORE_MB * 2**20, include_dashboard=False)
    out = run_search(cfg, name="large", report=False, log=lambda *_: None)
    capacity = ray.cluster_resources()["object_store_memory"]
    assert capacity <= STORE_MB * 2**20 * 1.01 < N * PX * PX * 3
    assert [r.method for r in out.rows][0] == "FairTune (selected)"
    assert all(np.isfinite(r.test["overall_auc"].point) for r in out.rows)
    assert (tmp_path / "local").exists()  # the node-local copy the trials mapped
