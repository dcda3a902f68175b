"""``block``: one bit per transformer block (all of the block's parameters), as timm groups them."""
from __future__ import annotations

from torch import nn

from fairtune_ray.models.param_groups import timm_groups, vit_reason
from fairtune_ray.models.spaces.registry import SpaceLayout, register_space


@register_space("block", fits=vit_reason)
def block_space(model: nn.Module) -> SpaceLayout:
    """One bit per ViT block (``blocks.i``), from timm's ``group_matcher``."""
    return SpaceLayout(groups=timm_groups(model, coarse=False) or [])
