"""Fixed masks without bits: full, linear, bitfit, attn_only, norm_only, and one per PEFT method
(lora, dora, ia3, loha).

Each lists what it trains besides the head. A PEFT baseline lists every parameter: that is its
*placement* (every group on), and ``apply_mask`` inserts the method's adapters into every linear of
the default kinds there (``models/adapters.py``), training only those and the head.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from fairtune_ray.models.adapters import DEFAULT_KINDS, kinds_reason, peft_method, peft_method_names
from fairtune_ray.models.param_groups import norm_param_names, vit_block_roles, vit_reason
from fairtune_ray.models.spaces.registry import SpaceLayout, register_space


def norm_reason(model: nn.Module) -> Optional[str]:
    return None if norm_param_names(model) else "has no normalisation layers with parameters"


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


def register_peft_baseline(method: str) -> None:
    """The fixed mask ``method``: the PEFT method at its default placement, every block's qkv/proj/fc1/fc2."""
    def build(model: nn.Module) -> SpaceLayout:
        return SpaceLayout(also_trainable=[n for n, _ in model.named_parameters()])

    build.__doc__ = (f"{peft_method(method).description.rstrip('.')}; adapters in every block's "
                     f"{'/'.join(DEFAULT_KINDS)} (peft), base weights frozen, head trained.")
    register_space(method, baseline=True, fits=kinds_reason)(build)


for _method in peft_method_names():
    register_peft_baseline(_method)
