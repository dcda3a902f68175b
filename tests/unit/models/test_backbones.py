"""Backbone factory and checkpoint handling (tiny models, pretrained=False: nothing downloads)."""
from __future__ import annotations

import pytest
import torch

from fairtune_ray.config import BackboneConfig, MicroConfig
from fairtune_ray.models import (
    CheckpointError,
    backbone_data_config,
    create_backbone,
    is_resnet,
    is_vit,
    save_backbone,
)

MICRO = MicroConfig(image_size=32, patch_size=8, width=48, depth=2, heads=2)


def micro_cfg(**kw) -> BackboneConfig:
    return BackboneConfig(name="micro", micro=MICRO, **kw)


def test_micro_shapes_and_data_config():
    torch.manual_seed(0)
    m = create_backbone(micro_cfg(), num_classes=1)
    assert is_vit(m) and not is_resnet(m)
    assert len(m.blocks) == 2 and m.embed_dim == 48 and m.head.out_features == 1
    out = m(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 1)
    dc = backbone_data_config(m)
    assert dc["input_size"] == (3, 32, 32)
    assert len(dc["mean"]) == 3 and len(dc["std"]) == 3


def test_default_micro_preset():
    m = create_backbone(BackboneConfig())  # the micro preset: ~0.68 M parameters
    assert 0.6e6 < sum(p.numel() for p in m.parameters()) < 0.75e6
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 1)


def test_named_resnet_with_image_size():
    m = create_backbone(BackboneConfig(name="resnet10t", image_size=64), num_classes=2)
    assert is_resnet(m) and not is_vit(m)
    assert backbone_data_config(m)["input_size"] == (3, 64, 64)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 2)


def test_micro_pretrained_without_checkpoint_is_an_error():
    with pytest.raises(ValueError, match="micro"):
        create_backbone(micro_cfg(pretrained=True))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip_with_head_mismatch(tmp_path, suffix):
    torch.manual_seed(1)
    source = create_backbone(micro_cfg(), num_classes=4)  # pre-trained on a 4-class source task
    path = save_backbone(source, tmp_path / "cache" / f"micro{suffix}")
    assert path.is_file()

    torch.manual_seed(2)
    fresh_head = create_backbone(micro_cfg(), num_classes=1).head.weight.detach().clone()
    torch.manual_seed(2)
    target = create_backbone(micro_cfg(checkpoint=str(path)), num_classes=1)
    src_sd, tgt_sd = source.state_dict(), target.state_dict()
    for k, v in tgt_sd.items():
        if k.startswith("head."):
            continue
        torch.testing.assert_close(v, src_sd[k], msg=k)
    assert target.head.weight.shape == (1, 48)
    torch.testing.assert_close(target.head.weight, fresh_head)  # re-initialised, not copied

    # same number of classes: the head is loaded too; the argument overrides cfg.checkpoint
    same = create_backbone(micro_cfg(checkpoint="/nonexistent.pt"), num_classes=4, checkpoint=path)
    torch.testing.assert_close(same.head.weight, source.head.weight)


def test_checkpoint_wrapped_state_dict(tmp_path):
    src = create_backbone(micro_cfg())
    p = tmp_path / "wrapped.pt"
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, p)
    m = create_backbone(micro_cfg(), checkpoint=str(p))
    torch.testing.assert_close(m.pos_embed, src.pos_embed)
    torch.save({"model": src.state_dict()}, p)
    m = create_backbone(micro_cfg(), checkpoint=str(p))
    torch.testing.assert_close(m.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)


def test_missing_checkpoint(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        create_backbone(micro_cfg(checkpoint=str(missing)))


def test_bad_keys(tmp_path):
    sd = create_backbone(micro_cfg()).state_dict()
    sd["blocks.0.extra.weight"] = torch.zeros(2)
    del sd["blocks.1.norm1.weight"]
    p = tmp_path / "bad.pt"
    torch.save(sd, p)
    with pytest.raises(CheckpointError) as e:
        create_backbone(micro_cfg(), checkpoint=p)
    msg = str(e.value)
    assert "bad.pt" in msg and "blocks.0.extra.weight" in msg and "blocks.1.norm1.weight" in msg

    # a differently sized backbone (non-head shape mismatch) is an error, not a silent partial load
    other = create_backbone(BackboneConfig(name="micro", micro=MicroConfig(image_size=32, patch_size=8, width=64,
                                                                              depth=2, heads=2)))
    p2 = tmp_path / "wide.pt"
    save_backbone(other, p2)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        create_backbone(micro_cfg(), checkpoint=p2)

    p3 = tmp_path / "junk.pt"
    p3.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        create_backbone(micro_cfg(), checkpoint=p3)
