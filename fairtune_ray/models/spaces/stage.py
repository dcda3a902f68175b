"""``stage``: one bit per stage of a hierarchical backbone (ResNet ``layer1..4``, ConvNeXt
``stages.i``...), as timm's coarse ``group_matcher`` defines them; stem and final norm stay frozen."""
from __future__ import annotations

from typing import Optional

from torch import nn

from fairtune_ray.models.param_groups import has_stages, timm_groups
from fairtune_ray.models.spaces.registry import SpaceLayout, register_space


def stage_reason(model: nn.Module) -> Optional[str]:
    """None when timm groups the model's blocks into stages (a ViT has blocks but no stages)."""
    return None if has_stages(model) else "needs a CNN with stages, e.g. a ResNet's layer1..layer4"


@register_space("stage", fits=stage_reason)
def stage_space(model: nn.Module) -> SpaceLayout:
    """One bit per stage (``layer1``..``layer4`` on a ResNet), from timm's coarse ``group_matcher``."""
    return SpaceLayout(groups=timm_groups(model, coarse=True) or [])
