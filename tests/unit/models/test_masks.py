"""Mask spaces, baselines and the LoRA baseline (HF peft) on real timm models (pretrained=False: nothing
downloads). Every PEFT method and its placement by the mask: test_peft_methods.py."""
from __future__ import annotations

import pytest
import timm
import torch

from fairtune_ray.models import (
    BASELINES,
    Mask,
    MaskSpaceError,
    adapted_modules,
    apply_mask,
    bits_param_names,
    get_space,
    list_spaces,
    mask_from_bits,
    spaces_for,
    tune_bit_keys,
)

B = 12
HEAD = {"head.weight", "head.bias"}


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    return timm.create_model("vit_base_patch16_224", pretrained=False)


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    return timm.create_model("resnet10t", pretrained=False, num_classes=1)


def _tiny_vit(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    args = dict(pretrained=False, img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=2, num_classes=1)
    args.update(kw)
    return timm.create_model("vit_tiny_patch16_224", **args)


def trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def numel(model: torch.nn.Module, names: set[str]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n in names)


def block_names(model: torch.nn.Module, i: int, *children: str) -> set[str]:
    pre = tuple(f"blocks.{i}.{c}." for c in children)
    return {n for n, _ in model.named_parameters() if n.startswith(pre)}


def one_hot(n: int, k: int) -> str:
    return "".join("1" if i == k else "0" for i in range(n))


def test_bit_counts(vit):
    assert [get_space(s, vit).n_bits for s in ("block", "attn_mlp_norm", "attn_norm1_mlp_norm2", "attn_params")] == [
        B, 3 * B, 4 * B, 4 * B]
    assert spaces_for(vit) == ["block", "attn_mlp_norm", "attn_norm1_mlp_norm2", "attn_params"]
    assert set(list_spaces()) == {"block", "attn_mlp_norm", "attn_norm1_mlp_norm2", "attn_params", "stage"}
    sp = get_space("attn_mlp_norm", vit)
    assert sp.group_names[3:6] == ["blocks.1.norm", "blocks.1.attn", "blocks.1.mlp"]
    assert len(sp.param_groups) == sp.n_bits == len(sp.group_names)


@pytest.mark.parametrize(
    "space,n,k,expect",
    [
        ("block", B, 3, lambda m: block_names(m, 3, "norm1", "attn", "norm2", "mlp")),
        ("attn_mlp_norm", 3 * B, 3 * 5 + 0, lambda m: block_names(m, 5, "norm1", "norm2")),
        ("attn_mlp_norm", 3 * B, 3 * 5 + 1, lambda m: block_names(m, 5, "attn")),
        ("attn_mlp_norm", 3 * B, 3 * 11 + 2, lambda m: block_names(m, 11, "mlp")),
        ("attn_norm1_mlp_norm2", 4 * B, 4 * 2 + 0, lambda m: block_names(m, 2, "norm1")),
        ("attn_norm1_mlp_norm2", 4 * B, 4 * 2 + 1, lambda m: block_names(m, 2, "attn")),
        ("attn_norm1_mlp_norm2", 4 * B, 4 * 2 + 2, lambda m: block_names(m, 2, "norm2")),
        ("attn_norm1_mlp_norm2", 4 * B, 4 * 2 + 3, lambda m: block_names(m, 2, "mlp")),
        ("attn_params", 4 * B, 4 * 7 + 0, lambda m: {"blocks.7.attn.qkv.weight", "pos_embed"}),
        ("attn_params", 4 * B, 4 * 7 + 1, lambda m: {"blocks.7.attn.qkv.bias", "pos_embed"}),
        ("attn_params", 4 * B, 4 * 7 + 2, lambda m: {"blocks.7.attn.proj.weight", "pos_embed"}),
        ("attn_params", 4 * B, 4 * 7 + 3, lambda m: {"blocks.7.attn.proj.bias", "pos_embed"}),
    ],
)
def test_single_bit_masks(vit, space, n, k, expect):
    want = expect(vit) | HEAD
    count = apply_mask(vit, Mask(space, one_hot(n, k)))
    assert trainable(vit) == want
    assert count == numel(vit, want)
    assert "pos_embed" in want or "pos_embed" not in trainable(vit)


def test_multi_bit_and_all_masks(vit):
    mask = Mask("attn_mlp_norm", "011" + "0" * 30 + "100")  # block 0 attn+mlp, block 11 norms
    want = block_names(vit, 0, "attn", "mlp") | block_names(vit, 11, "norm1", "norm2") | HEAD
    assert apply_mask(vit, str(mask)) == numel(vit, want)
    assert trainable(vit) == want

    linear = apply_mask(vit, "linear")
    assert trainable(vit) == HEAD and linear == numel(vit, HEAD)
    for s in ("block", "attn_mlp_norm", "attn_norm1_mlp_norm2"):
        n = get_space(s, vit).n_bits
        assert apply_mask(vit, Mask.all_zeros(s, n)) == linear
        # all ones = everything except the frozen stem and final norm
        ones = apply_mask(vit, Mask.all_ones(s, n))
        frozen = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                  "norm.weight", "norm.bias"}
        assert trainable(vit) == {n for n, _ in vit.named_parameters()} - frozen
        assert ones == numel(vit, trainable(vit))
    # attn_params all-zero: head + pos_embed
    assert apply_mask(vit, Mask.all_zeros("attn_params", 4 * B)) == linear + vit.pos_embed.numel()


def test_idempotent(vit):
    a = apply_mask(vit, "full")
    assert a == sum(p.numel() for p in vit.parameters())
    m = Mask("block", one_hot(B, 0))
    first = apply_mask(vit, m)
    names = trainable(vit)
    assert apply_mask(vit, m) == first and trainable(vit) == names


def test_baselines(vit):
    all_names = {n for n, _ in vit.named_parameters()}
    apply_mask(vit, "full")
    assert trainable(vit) == all_names
    apply_mask(vit, "linear")
    assert trainable(vit) == HEAD
    n = apply_mask(vit, "bitfit")
    biases = {x for x in all_names if x.endswith(".bias")}
    assert trainable(vit) == biases | HEAD and n == numel(vit, biases | HEAD)
    assert "patch_embed.proj.bias" in biases and "blocks.0.mlp.fc1.weight" not in trainable(vit)
    apply_mask(vit, "attn_only")
    assert trainable(vit) == {x for x in all_names if ".attn." in x} | HEAD
    apply_mask(vit, "norm_only")
    norms = {x for x in all_names if ".norm1." in x or ".norm2." in x or x.startswith("norm.")}
    assert trainable(vit) == norms | HEAD and len(norms) == 4 * B + 2


def test_mask_strings_and_validation(vit):
    m = Mask.parse("block:" + "01" * 6)
    assert str(m) == "block:010101010101" and m == Mask("block", "01" * 6) and m.as_list()[:2] == [0, 1]
    for b in BASELINES:
        assert str(Mask.parse(b)) == b and Mask.parse(b).is_baseline
    with pytest.raises(MaskSpaceError, match="expects 12"):
        apply_mask(vit, "block:0101")
    with pytest.raises(MaskSpaceError, match="expects 12"):
        Mask.parse("block:01010101010x", model=vit)
    with pytest.raises(MaskSpaceError, match="expects 36"):
        apply_mask(vit, Mask("attn_mlp_norm", "1" * 12))
    with pytest.raises(MaskSpaceError, match="0"):
        Mask("block", "0120")
    with pytest.raises(MaskSpaceError, match="unknown mask space 'nope'"):
        Mask.parse("nope:0101")
    with pytest.raises(MaskSpaceError, match="needs bits"):
        Mask.parse("block")


def test_tune_keys(vit):
    assert tune_bit_keys(3) == ["m00", "m01", "m02"]
    assert tune_bit_keys(150)[-1] == "m149" and tune_bit_keys(150)[0] == "m000"
    sp = get_space("attn_mlp_norm", vit)
    keys = bits_param_names(sp)
    assert len(keys) == 36 and keys[10] == "m10" and keys == sorted(keys)
    cfg = {k: (1 if i % 2 else 0) for i, k in enumerate(keys)} | {"lr": 1e-4}
    m = mask_from_bits(sp, cfg)
    assert m.bits == "01" * 18
    assert mask_from_bits("block", [1, 0, 1.0, True]).bits == "1011"
    with pytest.raises(MaskSpaceError, match="expects 36"):
        mask_from_bits(sp, [1, 0])


def test_layer_scale_and_qk_norm_grouping():
    m = _tiny_vit(init_values=1e-5, qk_norm=True)
    apply_mask(m, "attn_norm1_mlp_norm2:0100" + "0000")
    assert trainable(m) == {
        "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.q_norm.weight",
        "blocks.0.attn.q_norm.bias", "blocks.0.attn.k_norm.weight", "blocks.0.attn.k_norm.bias",
        "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias", "blocks.0.ls1.gamma"} | HEAD
    apply_mask(m, "attn_mlp_norm:001000")
    assert trainable(m) == block_names(m, 0, "mlp", "ls2") | HEAD


def test_stage_space_on_resnet(resnet, vit):
    sp = get_space("stage", resnet)
    assert sp.n_bits == 4 and sp.group_names == ["layer1", "layer2", "layer3", "layer4"]
    head = {"fc.weight", "fc.bias"}
    n = apply_mask(resnet, "stage:0010")
    want = {x for x, _ in resnet.named_parameters() if x.startswith("layer3.")} | head
    assert trainable(resnet) == want and n == numel(resnet, want)
    assert apply_mask(resnet, "stage:0000") == apply_mask(resnet, "linear") == numel(resnet, head)
    assert "conv1.0.weight" not in trainable(resnet)

    with pytest.raises(MaskSpaceError) as e:
        get_space("stage", vit)
    msg = str(e.value)
    assert "'stage'" in msg and "VisionTransformer" in msg and "attn_mlp_norm" in msg
    with pytest.raises(MaskSpaceError) as e:
        apply_mask(resnet, "block:0000")
    msg = str(e.value)
    assert "'block'" in msg and "ResNet" in msg and "stage" in msg
    with pytest.raises(MaskSpaceError, match="attn_only"):
        apply_mask(resnet, "attn_only")
    assert spaces_for(resnet) == ["stage"]


def test_lora_output_and_count():
    from fairtune_ray.models import AdapterSpec

    m = _tiny_vit()
    m.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
    rank = 3
    n = apply_mask(m, "lora", adapters=AdapterSpec("lora", rank=rank))
    with torch.no_grad():
        out = m(x)
    torch.testing.assert_close(out, ref)  # B = 0: the adapted model starts where the backbone is
    layers = {name: mod for name, mod in m.named_modules() if name in adapted_modules(m)}
    assert len(layers) == 2 * 4  # qkv, proj, fc1, fc2 per block
    shapes = [mod.get_base_layer() for mod in layers.values()]
    assert n == numel(m, HEAD) + sum(rank * (lin.in_features + lin.out_features) for lin in shapes)
    assert trainable(m) == HEAD | {x for x, _ in m.named_parameters() if ".lora_" in x}
    with pytest.raises(ValueError, match="already has PEFT adapters"):
        apply_mask(m, "lora")
    # gradients reach the adapters (B first, as A's gradient is zero while B = 0), not the base
    m(x).sum().backward()
    qkv = layers["blocks.0.attn.qkv"]
    assert qkv.lora_A["default"].weight.grad is None or qkv.lora_A["default"].weight.grad.abs().sum() == 0
    assert qkv.lora_B["default"].weight.grad is not None and qkv.lora_B["default"].weight.grad.abs().sum() > 0
    assert qkv.get_base_layer().weight.grad is None
    with torch.no_grad():  # once B is non-zero the adapter changes the output
        qkv.lora_B["default"].weight.normal_()
        assert not torch.allclose(m(x), ref)


def test_lora_count_on_vit_base(vit):
    import copy

    m = copy.deepcopy(vit)
    n = apply_mask(m, "lora")  # the baseline's defaults: rank 4 in every block's qkv, proj, fc1, fc2
    d = 768
    assert n == numel(m, HEAD) + B * 4 * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d))
