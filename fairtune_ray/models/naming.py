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
