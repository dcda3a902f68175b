"""EWC-style penalty with neutralised importance (docs/design.md#fisher-neutralisation (a)).

    penalty(theta) = lam/2 * sum_i I'_i (theta_i - theta*_i)^2

Why: it lets every weight move, but pulls the weights that are important for all groups alike
back towards the pre-trained theta*, which limits over-fitting of the small groups.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fairtune_ray.models.naming import canonical_name

__all__ = ["EWCPenalty", "canonical_name"]


def _params_by_canonical_name(model: nn.Module) -> dict[str, nn.Parameter]:
    return {canonical_name(n): p for n, p in model.named_parameters()}


class EWCPenalty(nn.Module):
    """``lam/2 * sum_i I'_i (theta_i - theta*_i)^2`` over the parameters named in ``importance``.

    theta* (copied from ``model`` at construction) and I' are buffers, so ``.to(device)`` moves
    them. ``forward(model)`` looks parameters up by name; a ``module.`` prefix on the model
    (DDP / Accelerate wrapping) or on the importance keys is tolerated. With ``strict=False``
    importance entries for parameters the model lacks (e.g. replaced by low-rank factors) are
    skipped with a warning instead of raising ``KeyError``.
    """

    def __init__(self, model: nn.Module, importance: Mapping[str, Tensor], lam: float, strict: bool = True) -> None:
        super().__init__()
        self.lam = float(lam)
        params = _params_by_canonical_name(model)
        self.names: list[str] = []
        skipped: list[str] = []
        for key, imp in importance.items():
            name = canonical_name(key)
            if name not in params:
                skipped.append(name)
                continue
            p = params[name]
            if tuple(imp.shape) != tuple(p.shape):
                raise ValueError(f"importance for {name!r} has shape {tuple(imp.shape)}, parameter {tuple(p.shape)}")
            i = len(self.names)
            self.names.append(name)
            self.register_buffer(f"theta_star_{i}", p.detach().clone())
            self.register_buffer(f"importance_{i}", imp.detach().to(device=p.device, dtype=p.dtype).clone())
        if skipped:
            msg = f"{len(skipped)} importance entries have no parameter in the model: {skipped[:5]}"
            if strict:
                raise KeyError(msg)
            warnings.warn(msg + " (skipped)", stacklevel=2)

    def forward(self, model: nn.Module) -> Tensor:
        params = _params_by_canonical_name(model)
        total: Tensor | None = None
        for i, name in enumerate(self.names):
            if name not in params:
                raise KeyError(f"parameter {name!r} not found in the model")
            p = params[name]
            star = getattr(self, f"theta_star_{i}").to(device=p.device, dtype=p.dtype)
            imp = getattr(self, f"importance_{i}").to(device=p.device, dtype=p.dtype)
            term = (imp * (p - star).pow(2)).sum()
            total = term if total is None else total + term
        if total is None:
            dev = next(iter(params.values())).device if params else torch.device("cpu")
            return torch.zeros((), device=dev)
        return 0.5 * self.lam * total

    def extra_repr(self) -> str:
        return f"lam={self.lam}, params={len(self.names)}"
