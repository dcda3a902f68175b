"""The mask-space registry: every registered space builds on the backbones it fits, with disjoint
groups read from timm's group_matcher; a space registered in one decorator works end to end."""
from __future__ import annotations

import pytest
import timm
import torch

from fairtune_ray.config import BackboneConfig, MicroConfig
from fairtune_ray.models import (
    Mask,
    MaskSpaceError,
    SpaceLayout,
    apply_mask,
    create_backbone,
    get_space,
    list_spaces,
    register_space,
    spaces_for,
    timm_groups,
    unregister_space,
)
from fairtune_ray.models.param_groups import vit_block_roles, vit_reason

MICRO = MicroConfig(image_size=32, patch_size=8, width=48, depth=2, heads=2)
# Parameters outside every block / stage: frozen by every searched space unless it says otherwise.
STEM_AND_FINAL = ("cls_token", "pos_embed", "patch_embed.", "norm.", "fc_norm.", "conv1.", "bn1.",
                  "stem.", "norm_pre.", "head.norm.")


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "micro": create_backbone(BackboneConfig(name="micro", micro=MICRO)),
        # class token + final LayerNorm: timm folds `norm` into the last block, the space must not
        "micro_token": create_backbone(BackboneConfig(name="micro", micro=MicroConfig(
            image_size=32, patch_size=8, width=48, depth=2, heads=2, global_pool="token", layer_scale=None))),
        "resnet": timm.create_model("resnet10t", pretrained=False, num_classes=1),
    }


@pytest.mark.parametrize("name", list_spaces(include_baselines=True))
def test_every_registered_space_builds_with_disjoint_groups(models, name):
    fitting = [m for m in models.values() if name in spaces_for(m, include_baselines=True)]
    assert fitting, f"space {name!r} fits none of the test backbones"
    for model in fitting:
        space = get_space(name, model)
        params = {n for n, _ in model.named_parameters()}
        flat = [n for g in space.param_groups for n in g]
        assert len(flat) == len(set(flat)), "a parameter is in two groups"
        assert set(flat) <= params and set(space.always_trainable) <= params
        assert len(set(space.group_names)) == space.n_bits == len(space.param_groups)
        assert all(space.param_groups), "an empty group would be a bit that switches nothing"
        head = {n for n in params if n.startswith(("head.", "fc."))}
        assert head <= set(space.always_trainable) and not head & set(flat)
        assert not [n for n in flat if n.startswith(STEM_AND_FINAL)]
        assert (space.n_bits == 0) == (name not in list_spaces())  # baselines have no bits


def test_block_and_stage_groups_come_from_timm(models):
    for key in ("micro", "micro_token"):
        m = models[key]
        block = get_space("block", m)
        assert block.group_names == ["blocks.0", "blocks.1"]
        for i, group in enumerate(block.param_groups):
            assert group == [n for n, _ in m.named_parameters() if n.startswith(f"blocks.{i}.")]
    assert "norm.weight" in dict(models["micro_token"].named_parameters())  # the filtered fold is real
    stage = get_space("stage", models["resnet"])
    names = [n for n, _ in models["resnet"].named_parameters()]
    assert stage.param_groups == [[n for n in names if n.startswith(f"layer{k}.")] for k in range(1, 5)]


def test_a_new_timm_family_gets_the_stage_space_without_code():
    m = timm.create_model("convnext_atto", pretrained=False, num_classes=1)
    assert spaces_for(m) == ["stage"]
    space = get_space("stage", m)
    assert space.group_names == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert not [n for g in space.param_groups for n in g if not n.startswith("stages.")]
    assert timm_groups(m, coarse=False) and len(timm_groups(m, coarse=False)) > 4  # blocks finer than stages


def test_vit_roles_cover_each_block(models):
    m = models["micro"]
    assert vit_reason(m) is None and vit_reason(models["resnet"]) == "needs a ViT with .blocks"
    (name, roles), _ = vit_block_roles(m)
    assert name == "blocks.0" and set(roles) == {"norm1", "attn", "norm2", "mlp"}
    assert "blocks.0.ls1.gamma" in roles["attn"] and "blocks.0.ls2.gamma" in roles["mlp"]


def test_toy_space_registered_in_one_decorator(models):
    m = models["micro"]

    @register_space("toy_mlps")
    def toy(model: torch.nn.Module) -> SpaceLayout:
        """One bit per block's MLP."""
        return SpaceLayout(groups=[(f"{b}.mlp", roles["mlp"]) for b, roles in vit_block_roles(model)])

    try:
        assert "toy_mlps" in list_spaces() and "toy_mlps" in spaces_for(m)
        assert get_space("toy_mlps", m).group_names == ["blocks.0.mlp", "blocks.1.mlp"]
        n = apply_mask(m, Mask.parse("toy_mlps:01", model=m))
        trained = {x for x, p in m.named_parameters() if p.requires_grad}
        assert trained == {x for x, _ in m.named_parameters() if x.startswith(("blocks.1.mlp.", "blocks.1.ls2.", "head."))}
        assert n == sum(p.numel() for p in m.parameters() if p.requires_grad)
        with pytest.raises(ValueError, match="already registered"):
            register_space("toy_mlps")(toy)
    finally:
        unregister_space("toy_mlps")
    assert "toy_mlps" not in list_spaces()
    with pytest.raises(MaskSpaceError, match=r"unknown mask space 'toy_mlps'.*spaces that fit: \['block'"):
        get_space("toy_mlps", m)
    with pytest.raises(MaskSpaceError, match="unknown mask space 'toy_mlps'; known: "):
        Mask("toy_mlps", "01")


def test_toy_baseline_and_fit_check(models):
    @register_space("toy_nothing", baseline=True, fits=lambda m: None if hasattr(m, "fc") else "needs .fc")
    def nothing(model: torch.nn.Module) -> SpaceLayout:
        """The head only."""
        return SpaceLayout()

    try:
        assert "toy_nothing" in spaces_for(models["resnet"], include_baselines=True)
        assert str(Mask.parse("toy_nothing")) == "toy_nothing" and Mask.parse("toy_nothing").is_baseline
        assert get_space("toy_nothing", models["resnet"]).always_trainable == ["fc.weight", "fc.bias"]
        with pytest.raises(MaskSpaceError, match=r"'toy_nothing' does not fit backbone VisionTransformer \(needs \.fc\)"):
            get_space("toy_nothing", models["micro"])
    finally:
        unregister_space("toy_nothing")
