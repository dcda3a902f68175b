"""Low-rank factorisation where it compresses: the default targets, the non-compressing error
(in factorise_linears and before Ray starts), and factors that follow the mask."""

from __future__ import annotations

import pytest
from torch import nn

from fairtune_ray.config import BackboneConfig, ConfigError, ExperimentConfig
from fairtune_ray.config.fisher import FisherConfig
from fairtune_ray.models import apply_mask, create_backbone, get_space
from fairtune_ray.models.lowrank import (
    LowRankLinear,
    compresses,
    factorise_linears,
    max_compressing_rank,
    resolve_linear_targets,
)
from fairtune_ray.search.preflight import check_factorisation


def _micro() -> nn.Module:
    """The default backbone (micro: width 96, depth 6, mlp 384), untrained: only shapes matter."""
    return create_backbone(BackboneConfig(), num_classes=1)


def _cfg(**fisher) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"search": {"method": "both"}, "fisher": fisher})


@pytest.mark.parametrize("rank", FisherConfig().ranks)
def test_default_targets_train_fewer_parameters_than_the_dense_layers(rank):
    model = _micro()
    targets = FisherConfig().factorise
    paths = resolve_linear_targets(model, targets)
    assert len(paths) == 4 * 6  # qkv, proj, fc1, fc2 in each of 6 blocks
    dense = sum(model.get_submodule(p).weight.numel() for p in paths)
    factors = factorise_linears(model, None, rank, targets)
    assert dense == 6 * (288 * 96 + 96 * 96 + 384 * 96 + 96 * 384) == 663_552
    assert factors == 6 * rank * ((288 + 96) + (96 + 96) + (384 + 96) + (96 + 384)) == 6 * rank * 1536
    assert factors < dense / 8  # r=4: 36,864; r=8: 73,728
    assert all(isinstance(model.get_submodule(p), LowRankLinear) for p in paths)


def test_compression_arithmetic():
    assert compresses(96, 96, 47) and not compresses(96, 96, 48)  # 48 * 192 == 9216
    assert max_compressing_rank(96, 96) == 47 and max_compressing_rank(1, 96) == 0
    assert all(not compresses(m, n, max_compressing_rank(m, n) + 1) for m, n in [(1, 5), (7, 3), (288, 96)])


def test_a_non_compressing_target_is_refused_naming_layer_shape_and_rank():
    model = _micro()
    with pytest.raises(ValueError, match=r"'head' \(weight 1 x 96.*rank 4.*no rank compresses it"):
        factorise_linears(model, None, 4, ["qkv", "head"])
    with pytest.raises(ValueError, match=r"'blocks.0.attn.proj' \(weight 96 x 96.*rank 48.*ranks up to 47"):
        factorise_linears(model, None, 48, ["proj"])
    assert isinstance(model.blocks[0].attn.qkv, nn.Linear)  # checked before anything was replaced


def test_preflight_config_errors_before_ray():
    model = _micro()
    check_factorisation(_cfg(), model)  # the defaults compress every block layer
    with pytest.raises(ConfigError, match=r"fisher.ranks.*'blocks.0.attn.proj' \(weight 96 x 96.*rank 48"):
        check_factorisation(_cfg(ranks=[4, 48]), model)  # the largest rank is the one checked
    with pytest.raises(ConfigError, match=r"'head' \(weight 1 x 96"):
        check_factorisation(_cfg(factorise=["head"]), model)
    resnet = create_backbone(BackboneConfig(name="resnet10t"), num_classes=1)
    with pytest.raises(ConfigError, match=r"fisher.factorise: target 'qkv' matches no module.*factorise: \[\]"):
        check_factorisation(_cfg(), resnet)
    check_factorisation(_cfg(factorise=[]), resnet)  # factorisation off: nothing to check
    fairtune_only = ExperimentConfig.model_validate({"fisher": {"factorise": ["head"]}})
    check_factorisation(fairtune_only, model)  # the Fisher options are not used


def test_ranks_must_be_positive():
    with pytest.raises(ValueError, match="ranks"):
        FisherConfig(ranks=[])
    with pytest.raises(ValueError, match="ranks"):
        FisherConfig(ranks=[4, 0])


@pytest.mark.parametrize("attn_bit", ["0", "1"])
def test_factorised_layer_follows_its_mask_bit(attn_bit):
    model = _micro()
    space = get_space("attn_mlp_norm", model)
    bit = space.group_names.index(next(g for g in space.group_names if "0" in g and "attn" in g))
    assert "blocks.0.attn.qkv.weight" in space.param_groups[bit]
    bits = ["1"] * space.n_bits
    bits[bit] = attn_bit
    apply_mask(model, f"attn_mlp_norm:{''.join(bits)}")
    factorise_linears(model, None, 4, ["qkv", "fc1"])
    qkv0 = model.blocks[0].attn.qkv
    on = attn_bit == "1"
    assert qkv0.A.requires_grad is on and qkv0.B.requires_grad is on
    assert qkv0.bias.requires_grad is on  # the bias keeps the mask's setting
    assert model.blocks[1].attn.qkv.A.requires_grad and model.blocks[0].mlp.fc1.B.requires_grad  # bits on


def test_fixed_masks_decide_too():
    linear_probe, full = _micro(), _micro()
    apply_mask(linear_probe, "linear")
    apply_mask(full, "full")
    for model in (linear_probe, full):
        factorise_linears(model, None, 4, ["fc2"])
    assert not any(p.requires_grad for n, p in linear_probe.named_parameters() if "fc2" in n)
    assert all(p.requires_grad for n, p in full.named_parameters() if "fc2" in n)
