"""``attn_mlp_norm`` and ``attn_norm1_mlp_norm2``: each ViT block split into its branches.

Layer scale and q/k norms go with their branch (see ``VIT_CHILD_ROLE``); a block child that
belongs to no branch makes the space not fit, rather than silently leaving it frozen.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from fairtune_ray.models.param_groups import unmapped_children, vit_block_roles, vit_reason
from fairtune_ray.models.spaces.registry import SpaceLayout, register_space

Branches = Sequence[tuple[str, tuple[str, ...]]]
"""(group label, block roles it holds), in bit order within a block."""


def branches_reason(model: nn.Module) -> Optional[str]:
    """None when every child of every ViT block belongs to a branch."""
    reason = vit_reason(model)
    if reason is not None:
        return reason
    bad = unmapped_children(model)
    return f"block children {bad} have no branch" if bad else None


def branch_layout(model: nn.Module, branches: Branches) -> SpaceLayout:
    """For each block, one group per branch: ``blocks.i.<label>``."""
    groups = [(f"{block}.{label}", [n for r in roles for n in by_role.get(r, [])])
              for block, by_role in vit_block_roles(model) for label, roles in branches]
    return SpaceLayout(groups=groups)


@register_space("attn_mlp_norm", fits=branches_reason)
def attn_mlp_norm_space(model: nn.Module) -> SpaceLayout:
    """Three bits per ViT block: both norms, attention, MLP."""
    return branch_layout(model, (("norm", ("norm1", "norm2")), ("attn", ("attn",)), ("mlp", ("mlp",))))


@register_space("attn_norm1_mlp_norm2", fits=branches_reason)
def attn_norm1_mlp_norm2_space(model: nn.Module) -> SpaceLayout:
    """Four bits per ViT block: norm1, attention, norm2, MLP."""
    return branch_layout(model, (("norm1", ("norm1",)), ("attn", ("attn",)),
                                 ("norm2", ("norm2",)), ("mlp", ("mlp",))))
