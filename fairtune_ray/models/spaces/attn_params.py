"""``attn_params``: one bit per attention projection tensor (qkv / proj weight and bias) of each
ViT block; the position embedding is trained with every mask of this space."""
from __future__ import annotations

from typing import Optional

from torch import nn

from fairtune_ray.models.param_groups import timm_groups, vit_reason
from fairtune_ray.models.spaces.registry import SpaceLayout, register_space

ATTN_PARAMS: tuple[str, ...] = ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias")


def _wanted(model: nn.Module) -> list[str]:
    return [f"{block}.{suffix}" for block, _ in timm_groups(model, coarse=False) or [] for suffix in ATTN_PARAMS]


def attn_params_reason(model: nn.Module) -> Optional[str]:
    """None when every block has all four attention projection tensors."""
    reason = vit_reason(model)
    if reason is not None:
        return reason
    have = {n for n, _ in model.named_parameters()}
    miss = [n for n in _wanted(model) if n not in have]
    return f"missing {miss[:3]}" if miss else None


@register_space("attn_params", fits=attn_params_reason)
def attn_params_space(model: nn.Module) -> SpaceLayout:
    """Four bits per ViT block: attn.qkv.{weight,bias}, attn.proj.{weight,bias}; pos_embed trained."""
    have = {n for n, _ in model.named_parameters()}
    return SpaceLayout(groups=[(n, [n]) for n in _wanted(model)],
                       also_trainable=["pos_embed"] if "pos_embed" in have else [])
