"""Neutralised importance and disparity from per-group Fisher (docs/design.md#fisher-neutralisation, our formulation).

    F^g_n = F^g / ||F^g||_1                      (L1 over every element of every selected tensor)
    I     = mean_g F^g_n
    D     = max_g F^g_n - min_g F^g_n            (element-wise disparity)
    I'    = I * exp(-gamma * D / mean(D))        (mean(D) over all elements; gamma=0 -> I' = I)

Why normalise per group: the raw Fisher scales with a group's loss and confidence, so a large or
poorly fitted group would dominate a plain average; after L1 normalisation every group carries
the same total mass, and the result is invariant to rescaling any single group's Fisher.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["normalise", "neutralised_importance", "disparity"]

#: mean(D) below this fraction of mean(I) is treated as 0 (no down-weighting).
_REL_TOL = 1e-6


def _normalise_one(F: Mapping[str, Tensor], keep_dtype: bool = True) -> dict[str, Tensor]:
    """F / ||F||_1, computed in float64 (returned in F's dtype unless ``keep_dtype=False``)."""
    total = sum((t.detach().double().abs().sum() for t in F.values()), torch.zeros((), dtype=torch.float64))
    ok = bool(total > 0) and bool(torch.isfinite(total))
    out = {n: (t.detach().double() / total if ok else torch.zeros_like(t, dtype=torch.float64)) for n, t in F.items()}
    return {n: o.to(F[n].dtype) for n, o in out.items()} if keep_dtype else out


def normalise(F_g: Mapping) -> dict:
    """One group's Fisher ``{param: tensor}`` divided by its L1 norm (an all-zero Fisher stays 0).

    Also accepts ``{group: {param: tensor}}`` and normalises each group separately.
    """
    if F_g and isinstance(next(iter(F_g.values())), Mapping):
        return {g: _normalise_one(f) for g, f in F_g.items()}
    return _normalise_one(F_g)


def _stacked(fisher_by_group: Mapping[int, Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """{param: float64 tensor of shape (G, *param.shape)} of the normalised Fisher."""
    if not fisher_by_group:
        raise ValueError("fisher_by_group is empty")
    normed = [_normalise_one(f, keep_dtype=False) for f in fisher_by_group.values()]
    names = list(normed[0])
    for f in normed[1:]:
        if set(f) != set(names):
            raise ValueError("all groups must have Fisher for the same parameters")
    return {n: torch.stack([f[n] for f in normed]) for n in names}


def disparity(fisher_by_group: Mapping[int, Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """D = max_g F^g_n - min_g F^g_n, element-wise."""
    return neutralised_importance(fisher_by_group)[1]


def neutralised_importance(
    fisher_by_group: Mapping[int, Mapping[str, Tensor]], gamma: float = 0.0
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(I', D): the neutralised importance and the disparity, both ``{param: tensor}``.

    With ``gamma == 0`` or ``mean(D) <= 1e-6 * mean(I)`` (groups agree), I' = I.
    """
    dtypes = {n: t.dtype for n, t in next(iter(fisher_by_group.values())).items()} if fisher_by_group else {}
    stacked = _stacked(fisher_by_group)
    I = {n: s.mean(0) for n, s in stacked.items()}
    D = {n: s.amax(0) - s.amin(0) for n, s in stacked.items()}

    def cast(d: dict[str, Tensor]) -> dict[str, Tensor]:
        return {n: t.to(dtypes[n]) for n, t in d.items()}

    if gamma == 0.0:
        return cast(I), cast(D)
    numel = max(sum(d.numel() for d in D.values()), 1)
    mean_d = sum(float(d.double().sum()) for d in D.values()) / numel
    mean_i = sum(float(i.double().sum()) for i in I.values()) / numel
    # Guard: D that is zero up to floating-point rounding (groups agree) must not be blown up to
    # O(1) by dividing by its own tiny mean.
    if mean_d <= _REL_TOL * mean_i:
        return cast(I), cast(D)
    I_prime = {n: I[n] * torch.exp(-gamma * D[n] / mean_d) for n in I}
    return cast(I_prime), cast(D)
