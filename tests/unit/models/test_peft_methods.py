"""PEFT methods through HF peft on the micro ViT: the mask bits decide where adapters go.

For each method (lora, dora, ia3, loha): adapters only in the linears of the groups that are on (and of the
chosen kinds), base weights frozen, head trained; the trainable count is peft's own figure; the adapted
model starts where the backbone is, and merging the adapters keeps its outputs (what the export relies on).
"""
from __future__ import annotations

import copy

import pytest
import torch

from fairtune_ray.config import load_config
from fairtune_ray.models import (
    DEFAULT_KINDS,
    AdapterSpec,
    MaskSpaceError,
    adapted_modules,
    apply_mask,
    create_backbone,
    get_space,
    merge_adapters,
    peft_method_names,
)
from fairtune_ray.training.setup import build_model
from fairtune_ray.training.spec import TrialSpec

METHODS = ["lora", "dora", "ia3", "loha"]
HEAD = {"head.weight", "head.bias"}
D, HIDDEN, DEPTH = 96, 384, 6  # the micro preset: width 96, MLP ratio 4, 6 blocks
RANK = 2
ADAPTER_MARKS = ("lora_", "ia3_", "hada_")  # peft's parameter prefixes of these methods


def micro() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = load_config(None)
    return create_backbone(cfg.backbone.model_copy(update={"pretrained": False}), num_classes=1)


def some_bits() -> str:
    """attn_mlp_norm bits (norm, attn, mlp per block): block 0 attn, block 1 mlp, block 2 norm only."""
    bits = ["0"] * (3 * DEPTH)
    bits[0 * 3 + 1] = bits[1 * 3 + 2] = bits[2 * 3 + 0] = "1"
    return "attn_mlp_norm:" + "".join(bits)


ON_LINEARS = {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"}


def trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def peft_figure(model: torch.nn.Module) -> int:
    """What peft's ``print_trainable_parameters`` prints, on our (in-place adapted) model."""
    from peft import PeftModel

    return PeftModel.get_nb_trainable_parameters(model)[0]


def peft_oracle(method: str, targets: list[str], rank: int = RANK) -> int:
    """The same placement built by peft's own ``get_peft_model`` (head as ``modules_to_save``)."""
    import peft

    from fairtune_ray.models.adapters import peft_method

    config = peft_method(method).build(peft, AdapterSpec(method, rank), sorted(targets))
    config.modules_to_save = ["head"]
    return peft.get_peft_model(micro(), config).get_nb_trainable_parameters()[0]


def expected_count(method: str, linears: dict[str, tuple[int, int]], rank: int = RANK) -> int:
    """Closed form per method over (in, out) of the adapted linears, plus the head (96 + 1)."""
    per = {"lora": lambda i, o: rank * (i + o), "dora": lambda i, o: rank * (i + o) + o,
           "ia3": lambda i, o: o, "loha": lambda i, o: 2 * rank * (i + o)}[method]
    ia3_ff = {n: (i, o) for n, (i, o) in linears.items() if method == "ia3" and n.endswith("fc2")}
    return D + 1 + sum(i if n in ia3_ff else per(i, o) for n, (i, o) in linears.items())


def shapes(names) -> dict[str, tuple[int, int]]:
    kind = {"qkv": (D, 3 * D), "proj": (D, D), "fc1": (D, HIDDEN), "fc2": (HIDDEN, D)}
    return {n: kind[n.rpartition(".")[2]] for n in names}


def test_the_registry_offers_four_methods():
    assert peft_method_names() == METHODS


@pytest.mark.parametrize("method", METHODS)
def test_adapters_only_where_the_mask_is_on(method):
    model = micro()
    n = apply_mask(model, some_bits(), adapters=AdapterSpec(method, rank=RANK))
    assert set(adapted_modules(model)) == ON_LINEARS  # block 2's norm bit has no linear; the head none
    adapters = trainable(model) - HEAD
    assert HEAD <= trainable(model) and adapters
    for name in adapters:  # every trainable parameter but the head is an adapter of an on-bit linear
        layer = next((m for m in ON_LINEARS if name.startswith(m + ".")), None)
        assert layer is not None and any(mark in name for mark in ADAPTER_MARKS), name
    assert {m for m in ON_LINEARS if any(a.startswith(m + ".") for a in adapters)} == ON_LINEARS
    assert not any(p.requires_grad for n, p in model.named_parameters() if "base_layer" in n)
    assert n == count(model) == peft_figure(model) == expected_count(method, shapes(ON_LINEARS))
    assert n == peft_oracle(method, sorted(ON_LINEARS))


@pytest.mark.parametrize("method", METHODS)
def test_target_kinds_narrow_the_placement(method):
    model = micro()
    apply_mask(model, some_bits(), adapters=AdapterSpec(method, rank=RANK, kinds=("qkv", "fc2")))
    assert set(adapted_modules(model)) == {"blocks.0.attn.qkv", "blocks.1.mlp.fc2"}


@pytest.mark.parametrize("method", METHODS)
def test_default_placement_counts(method):
    """The baselines: every block's qkv, proj, fc1, fc2 at rank 4, the figures quoted in docs/design.md."""
    model = micro()
    n = apply_mask(model, method)  # the PEFT baseline mask implies its method at the defaults
    linears = [f"blocks.{b}.{k}" for b in range(DEPTH) for k in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    assert set(adapted_modules(model)) == set(linears)
    assert n == peft_figure(model) == expected_count(method, shapes(linears), rank=4)
    assert n == {"lora": 36961, "dora": 42145, "ia3": 7009, "loha": 73825}[method]


@pytest.mark.parametrize("method", METHODS)
def test_the_logged_count_is_peft_s(method):
    """build_model's count is what a trial logs as ``trainable_params``."""
    cfg = load_config(None, overrides={"peft.rank": RANK})
    spec = TrialSpec(mask=some_bits(), peft=method, peft_rank=RANK)
    model, n, _ = build_model(cfg, spec, None)
    assert n == peft_figure(model) == expected_count(method, shapes(ON_LINEARS))


@pytest.mark.parametrize("method", METHODS)
def test_starts_at_the_backbone_and_merges_exactly(method):
    model = micro().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        apply_mask(model, some_bits(), adapters=AdapterSpec(method, rank=RANK))
        torch.testing.assert_close(model(x), ref)  # identity initialisation
        for name, p in model.named_parameters():
            if p.requires_grad and name not in HEAD:
                p.add_(torch.randn_like(p) * 0.1)
        adapted = model(x)
        assert not torch.allclose(adapted, ref)
        merged = merge_adapters(copy.deepcopy(model))
        torch.testing.assert_close(merged(x), adapted, atol=1e-5, rtol=1e-4)
    assert adapted_modules(merged) == [] and set(merged.state_dict()) == set(micro().state_dict())


def test_gradients_reach_the_adapters_and_the_head_only():
    model = micro()
    apply_mask(model, some_bits(), adapters=AdapterSpec("dora", rank=RANK))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad <= trainable(model) and "head.weight" in with_grad
    assert any("lora_B" in n for n in with_grad)


def test_all_zeros_is_the_linear_probe_without_peft_layers():
    model = micro()
    n = apply_mask(model, "attn_mlp_norm:" + "0" * 18, adapters=AdapterSpec("lora"))
    assert adapted_modules(model) == [] and trainable(model) == HEAD and n == D + 1


def test_spec_and_mask_name_the_method():
    assert TrialSpec(mask="lora").adapters() == AdapterSpec("lora")
    assert TrialSpec(mask="attn_mlp_norm:01", peft="ia3").adapters().method == "ia3"
    assert TrialSpec(mask="full").adapters() is None and TrialSpec(mask="full").peft_method == ""
    assert TrialSpec(mask="block:11", peft="loha").short_name() == "block[2/2]+loha"
    spec = TrialSpec(mask="block:101", peft="dora", peft_rank=8, peft_alpha=16.0, peft_targets=["qkv"])
    assert TrialSpec(**spec.to_dict()) == spec  # model.json and the stage records round-trip it
    with pytest.raises(MaskSpaceError, match="unknown PEFT method 'vera'"):
        AdapterSpec("vera")


def test_a_backbone_without_such_linears_does_not_fit():
    import timm

    resnet = timm.create_model("resnet10t", pretrained=False, num_classes=1)
    with pytest.raises(MaskSpaceError, match="does not fit backbone ResNet .*no nn.Linear named"):
        get_space("lora", resnet)
    assert DEFAULT_KINDS == ("qkv", "proj", "fc1", "fc2")


def test_peft_is_imported_only_by_runs_that_insert_adapters():
    """A mask alone never imports peft (which imports transformers, 5-10 s)."""
    import subprocess
    import sys

    code = ("import sys; from fairtune_ray.config import load_config; from fairtune_ray.training.setup import "
            "build_model; from fairtune_ray.training.spec import TrialSpec; "
            "build_model(load_config(None), TrialSpec(mask='attn_mlp_norm:' + '1' * 18), None); "
            "assert 'peft' not in sys.modules and 'transformers' not in sys.modules, 'peft imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
