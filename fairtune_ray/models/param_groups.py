"""A backbone's parameters in the groups masks switch: head, normalisation layers, blocks, stages.

Why timm's ``model.group_matcher``: every timm family already describes its blocks (fine) and
stages (coarse) as regexes, for layer-wise learning-rate decay. Reading that description instead
of hard-coding ``model.blocks`` / ``layer1..layer4`` lets a new timm family get the ``block`` or
``stage`` space without new code here.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

from timm.models import group_parameters
from timm.models._manipulate import MATCH_PREV_GROUP  # (99999,); timm.models does not re-export it
from torch import nn

from fairtune_ray.common.errors import InputError
from fairtune_ray.models.backbones import is_vit

Groups = list[tuple[str, list[str]]]
"""Named parameter groups in bit order: ``[("blocks.0", ["blocks.0.norm1.weight", ...]), ...]``."""

# Which role each child of a timm ViT block plays: layer scale (ls1 / gamma_1) and q/k norms
# (inside attn) belong to the attention branch, ls2 / gamma_2 to the MLP branch.
VIT_CHILD_ROLE: dict[str, str] = {
    "norm1": "norm1", "attn": "attn", "ls1": "attn", "gamma_1": "attn",
    "norm2": "norm2", "mlp": "mlp", "ls2": "mlp", "gamma_2": "mlp",
}
# timm's own norm classes (RmsNorm, LayerNorm2d, BatchNormAct2d, FrozenBatchNorm2d, ...).
_NORM_CLASS = re.compile(r"Norm(?:Act)?\d*d?$")
_TORCH_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


class MaskSpaceError(InputError):
    """A mask or space that does not fit the backbone (wrong space, length or characters)."""


def head_param_names(model: nn.Module) -> list[str]:
    """Parameter names of the classification head (``model.get_classifier()``)."""
    if hasattr(model, "get_classifier"):
        ids = {id(p) for p in model.get_classifier().parameters()}
        return [n for n, p in model.named_parameters() if id(p) in ids]
    clf = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(clf, str):
        return [n for n, _ in model.named_parameters() if n.startswith(clf + ".")]
    raise MaskSpaceError(f"cannot find the classification head of {type(model).__name__}")


def norm_param_names(model: nn.Module) -> list[str]:
    """Parameters owned directly by normalisation layers (LayerNorm, BatchNorm, RMSNorm, ...)."""
    names: list[str] = []
    for mname, mod in model.named_modules():
        if isinstance(mod, _TORCH_NORMS) or _NORM_CLASS.search(type(mod).__name__):
            names.extend(f"{mname}.{n}" if mname else n for n, _ in mod.named_parameters(recurse=False))
    return names


# --------------------------------------------------------------------------- timm's grouping
def _block_specs(model: nn.Module, coarse: bool) -> Optional[list[tuple[str, Any]]]:
    """The ``blocks`` entry of ``model.group_matcher(coarse)`` as (regex, suffix) pairs, or None.

    timm folds the final norm (ViT ``norm``, ConvNeXt ``norm_pre``, EfficientNet ``conv_head``)
    into the last block with the suffix MATCH_PREV_GROUP. Masks keep those frozen, so such
    entries are dropped here: each group holds only its own block's (or stage's) parameters.
    The ``stem`` entry is not read at all: patch embed, cls token and pos embed stay frozen too.
    """
    matcher = getattr(model, "group_matcher", None)
    if not callable(matcher):
        return None
    spec = matcher(coarse=coarse)
    blocks = spec.get("blocks") if isinstance(spec, dict) else None
    if blocks is None:
        return None
    pairs: Sequence = blocks if isinstance(blocks, (list, tuple)) else [(blocks, None)]
    return [(p, s) for p, s in pairs if tuple(s or ()) != MATCH_PREV_GROUP]


def timm_groups(model: nn.Module, coarse: bool) -> Optional[Groups]:
    """Blocks (``coarse=False``) or stages (``coarse=True``) as timm groups them, in order.

    Each group is named by the text its regex matched (``blocks.3``, ``layer2``, ``stages.1``).
    None when the model has no ``group_matcher`` describing its blocks.
    """
    specs = _block_specs(model, coarse)
    if not specs:
        return None
    patterns = [re.compile(p) for p, _ in specs]

    def label(name: str) -> Optional[str]:
        return next((m.group(0) for m in (p.match(name) for p in patterns) if m), None)

    # Unmatched parameters (stem, final norm, head) all share timm's last ordinal: one group, dropped.
    grouped = group_parameters(model, {"blocks": specs})
    out: Groups = []
    for _, names in sorted(grouped.items()):
        first = label(names[0])
        if first is not None:
            out.append((first, list(names)))
    return out or None


def has_stages(model: nn.Module) -> bool:
    """timm groups the model's blocks into stages: its coarse grouping differs from the fine one."""
    coarse = _block_specs(model, coarse=True)
    return bool(coarse) and coarse != _block_specs(model, coarse=False)


# --------------------------------------------------------------------------- ViT blocks
def vit_reason(model: nn.Module) -> Optional[str]:
    """None when ``model`` is a ViT whose blocks timm can group, else why not."""
    if not is_vit(model):
        return "needs a ViT with .blocks"
    if not timm_groups(model, coarse=False):
        return "has no timm group_matcher naming its blocks"
    return None


def vit_block_roles(model: nn.Module) -> list[tuple[str, dict[str, list[str]]]]:
    """Per block: its name and role ('norm1', 'attn', 'norm2', 'mlp', or '?child') -> parameters."""
    out: list[tuple[str, dict[str, list[str]]]] = []
    for block, names in timm_groups(model, coarse=False) or []:
        roles: dict[str, list[str]] = {}
        for n in names:
            child = n[len(block) + 1:].split(".", 1)[0]
            roles.setdefault(VIT_CHILD_ROLE.get(child, "?" + child), []).append(n)
        out.append((block, roles))
    return out


def unmapped_children(model: nn.Module) -> list[str]:
    """Children of ViT blocks that belong to no branch (norm1 / attn / norm2 / mlp)."""
    return sorted({r[1:] for _, roles in vit_block_roles(model) for r in roles if r.startswith("?")})
