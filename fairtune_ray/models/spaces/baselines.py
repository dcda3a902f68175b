"""Fixed masks without bits: full, linear, bitfit, attn_only, norm_only and lora.

Each lists what it trains besides the head. ``lora`` trains only the head here: its adapters are
added (and switched on) by ``apply_lora`` itself.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from fairtune_ray.models.lora import DEFAULT_TARGETS, lora_target_names
from fairtune_ray.models.param_groups import norm_param_names, vit_block_roles, vit_reason
from fairtune_ray.models.spaces.registry import SpaceLayout, register_space


def norm_reason(model: nn.Module) -> Optional[str]:
    return None if norm_param_names(model) else "has no normalisation layers with parameters"


def lora_reason(model: nn.Module) -> Optional[str]:
    return None if lora_target_names(model, DEFAULT_TARGETS) else f"no nn.Linear named {list(DEFAULT_TARGETS)}"


@register_space("full", baseline=True)
def full_space(model: nn.Module) -> SpaceLayout:
    """Every parameter trained (full fine-tuning)."""
    return SpaceLayout(also_trainable=[n for n, _ in model.named_parameters()])


@register_space("linear", baseline=True)
def linear_space(model: nn.Module) -> SpaceLayout:
    """The head only (linear probing)."""
    return SpaceLayout()


@register_space("bitfit", baseline=True)
def bitfit_space(model: nn.Module) -> SpaceLayout:
    """Every bias and the head (BitFit)."""
    return SpaceLayout(also_trainable=[n for n, _ in model.named_parameters() if n == "bias" or n.endswith(".bias")])


@register_space("attn_only", baseline=True, fits=vit_reason)
def attn_only_space(model: nn.Module) -> SpaceLayout:
    """Attention branches of every ViT block (with layer scale and q/k norms) and the head."""
    return SpaceLayout(also_trainable=[n for _, roles in vit_block_roles(model) for n in roles.get("attn", [])])


@register_space("norm_only", baseline=True, fits=norm_reason)
def norm_only_space(model: nn.Module) -> SpaceLayout:
    """Every normalisation layer and the head."""
    return SpaceLayout(also_trainable=norm_param_names(model))


@register_space("lora", baseline=True, fits=lora_reason)
def lora_space(model: nn.Module) -> SpaceLayout:
    """Low-rank adapters on the attention projections (added by apply_lora) and the head."""
    return SpaceLayout()
