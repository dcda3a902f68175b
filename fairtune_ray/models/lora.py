"""LoRA baseline (rank-r adapters on the attention projections).

Why a subclass of ``nn.Linear`` rather than a wrapper holding ``.base``: the frozen weight and
bias keep their original parameter names (``blocks.0.attn.qkv.weight``), so backbone checkpoints,
mask groups and Fisher statistics still line up; only ``lora_A``/``lora_B`` are new.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fairtune_ray.models.param_groups import MaskSpaceError, head_param_names

DEFAULT_TARGETS: tuple[str, ...] = ("attn.qkv", "attn.proj")


class LoRALinear(nn.Linear):
    """``y = W x + b + (alpha / r) * B A x`` with W, b frozen and A (r x in), B (out x r) trained."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float | None = None) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        # Build an empty Linear shell, then share the base's own Parameters (no copy).
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None,
                         device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self.rank = int(rank)
        self.alpha = float(alpha) if alpha is not None else float(rank)
        self.scaling = self.alpha / self.rank
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(self.rank, self.in_features, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, self.rank, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear / the LoRA paper code
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        return out + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    def to_linear(self) -> nn.Linear:
        """A plain Linear with the adapter merged in (for export / evaluation)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight + self.scaling * self.lora_B @ self.lora_A)
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"


def _matches(name: str, targets: Iterable[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def lora_target_names(model: nn.Module, targets: Iterable[str] = DEFAULT_TARGETS) -> list[str]:
    """Module names of the Linear layers LoRA would adapt (used to check a backbone fits)."""
    targets = tuple(targets)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, targets)]


def apply_lora(
    model: nn.Module,
    rank: int = 4,
    alpha: float | None = None,
    targets: Iterable[str] = DEFAULT_TARGETS,
) -> int:
    """Adapt the target Linear layers in place; freeze everything but adapters + head.

    Returns the trainable parameter count. Calling it again re-creates fresh adapters (an
    existing LoRALinear is rebuilt from its frozen base), so repeated calls are safe.
    """
    targets = tuple(targets)
    names = lora_target_names(model, targets)
    if not names:
        raise MaskSpaceError(
            f"space 'lora' does not fit {type(model).__name__}: no nn.Linear named {list(targets)}"
        )
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        if isinstance(old, LoRALinear):
            base = nn.Linear(old.in_features, old.out_features, bias=old.bias is not None, device="meta")
            base.weight, base.bias = old.weight, old.bias
            old = base
        setattr(parent, child, LoRALinear(old, rank=rank, alpha=alpha))
    head = set(head_param_names(model))
    total = 0
    for n, p in model.named_parameters():
        train = n in head or n.endswith(".lora_A") or n.endswith(".lora_B")
        p.requires_grad_(train)
        total += p.numel() if train else 0
    return total
