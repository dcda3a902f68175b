"""Parameter names independent of wrappers, so importance maps, masks and checkpoints line up."""
from __future__ import annotations

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / Accelerate, torch.compile


def canonical_name(name: str) -> str:
    """Parameter name without DDP (``module.``) / torch.compile (``_orig_mod.``) prefixes."""
    changed = True
    while changed:
        changed = False
        for pre in WRAPPER_PREFIXES:
            if name.startswith(pre):
                name, changed = name[len(pre):], True
    return name


def short_mask_label(mask: str) -> str:
    """``space:bits`` as ``space[on/total]`` (e.g. ``attn_mlp_norm[10/18]``); a baseline name as is."""
    if ":" not in mask:
        return mask
    space, bits = mask.split(":", 1)
    return f"{space}[{bits.count('1')}/{len(bits)}]"
