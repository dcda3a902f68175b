"""A backbone checkpoint reaches Ray workers through the object store, not the driver's disk."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import ray
import torch

from fairtune_ray.config import BackboneConfig
from fairtune_ray.models import create_backbone, save_backbone
from fairtune_ray.models.shipping import (
    CACHE_DIR_ENV,
    CheckpointError,
    ShippedCheckpoint,
    checkpoint_path,
    checkpoint_sha256,
    file_sha256,
    ship_checkpoint,
)

MICRO = {"name": "micro", "micro": {"image_size": 32, "patch_size": 8, "width": 32, "depth": 2, "heads": 2}}


def _weights_digest(state: dict) -> str:
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        if not k.startswith("head"):  # the head is freshly initialised on load
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def local_ray():
    ray.shutdown()  # a shared instance left by the search tests (tests/conftest.py, ray_local)
    ray.init(num_cpus=1, include_dashboard=False)
    yield
    ray.shutdown()


def test_paths_uris_and_none_pass_through(tmp_path):
    assert ship_checkpoint(None) is None
    assert ship_checkpoint("s3://bucket/weights.pt") == "s3://bucket/weights.pt"
    missing = str(tmp_path / "nope.pt")
    assert ship_checkpoint(missing) == missing  # loading reports the missing path later
    assert checkpoint_path(None) is None
    assert checkpoint_path(tmp_path / "a.pt") == str(tmp_path / "a.pt")


def test_worker_loads_weights_after_the_driver_file_is_gone(tmp_path, local_ray):
    cfg = BackboneConfig(**MICRO)
    torch.manual_seed(0)
    original = create_backbone(cfg, num_classes=4)
    ckpt = save_backbone(original, tmp_path / "driver" / "micro.pt")
    shipped = ship_checkpoint(str(ckpt))
    assert isinstance(shipped, ShippedCheckpoint)
    assert checkpoint_sha256(shipped) == checkpoint_sha256(str(ckpt)) == file_sha256(ckpt)
    assert str(shipped) == str(ckpt.resolve())
    ckpt.unlink()  # as on a node that never had the driver's file

    node_cache = tmp_path / "node-cache"

    @ray.remote(num_cpus=1, runtime_env={"env_vars": {CACHE_DIR_ENV: str(node_cache)}})
    def load_on_worker(c):
        model = create_backbone(BackboneConfig(**MICRO), num_classes=1, checkpoint=c)
        return model.state_dict(), checkpoint_path(c)

    state, path = ray.get(load_on_worker.remote(shipped))
    digest = _weights_digest(state)
    assert digest == _weights_digest(original.state_dict())
    assert path.startswith(str(node_cache)) and file_sha256(path) == shipped.sha256
    # A second process on the node reuses the written file.
    state2, path2 = ray.get(load_on_worker.remote(shipped))
    assert (_weights_digest(state2), path2) == (digest, path)
    assert len(list(node_cache.rglob("*.pt"))) == 1


def _corrupt(path: str) -> None:
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, same name, other weights
    Path(path).write_bytes(bytes(data))


def test_altered_node_cache_file_is_fetched_again(tmp_path, local_ray):
    """The node cache is trusted by its SHA-256, not by its path: an altered file is replaced, not loaded."""
    torch.manual_seed(0)
    original = create_backbone(BackboneConfig(**MICRO), num_classes=4)
    shipped = ship_checkpoint(str(save_backbone(original, tmp_path / "driver" / "micro.pt")))
    node_cache = tmp_path / "node-cache"
    path = shipped.local_path(node_cache)
    _corrupt(path)
    assert file_sha256(path) != shipped.sha256
    again = shipped.local_path(node_cache)
    assert again == path and file_sha256(again) == shipped.sha256
    model = create_backbone(BackboneConfig(**MICRO), num_classes=1, checkpoint=again)
    assert _weights_digest(model.state_dict()) == _weights_digest(original.state_dict())


def test_shipped_bytes_with_another_digest_are_refused(tmp_path, local_ray):
    ckpt = save_backbone(create_backbone(BackboneConfig(**MICRO), num_classes=1), tmp_path / "micro.pt")
    wrong = ShippedCheckpoint(origin=str(ckpt), sha256="0" * 64, ref=ray.put(ckpt.read_bytes()))
    with pytest.raises(CheckpointError, match=r"micro\.pt.*SHA-256"):
        wrong.local_path(tmp_path / "node-cache")
    assert not list((tmp_path / "node-cache").rglob("*.pt"))
