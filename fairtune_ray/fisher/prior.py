"""A search prior from Fisher disparity (docs/design.md#fisher-neutralisation (c)).

Each mask bit of a ``MaskSpace`` switches a group of parameters. A group whose weights the
demographic groups use very differently is group-specific: training it risks fitting the majority
at the expense of the minority, so such groups are candidates to FREEZE. The masks produced here
(all ones except the top-k most group-specific groups) seed the search through
``points_to_evaluate``.

Group-specific, not merely important: with the normalised per-group Fisher F^g_n, the element-wise
disparity D = max_g F^g_n - min_g F^g_n and importance I = mean_g F^g_n, a parameter group P scores

    R(P) = sum_{i in P} D_i / sum_{i in P} I_i        (relative disparity)

For two groups that is sum |F^a_n - F^b_n| / sum (F^a_n + F^b_n) / 2. R is 0 when the groups use
P alike and at most G (the number of groups; 2 when only one group uses P), whatever P's overall
importance. The absolute score (mean of D over P) grows with importance: a heavily used group
shows a large D from a small relative difference (and from normalising each group's Fisher), so
it would rank the most important groups first rather than the group-specific ones. A ratio of
sums rather than a mean of element ratios: elements with I ~ 0 carry no information and would
make element ratios noisy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Optional, Protocol

from torch import Tensor

from .penalty import canonical_name

__all__ = ["rank_groups_by_disparity", "prior_masks", "SpaceLike"]


class SpaceLike(Protocol):
    """The part of ``fairtune_ray.models.MaskSpace`` this module needs."""

    param_groups: Sequence[Sequence[str]]
    group_names: Sequence[str]


def _group_sums(names: Iterable[str], D: Mapping[str, Tensor],
                I: Optional[Mapping[str, Tensor]]) -> tuple[float, float, int]:
    """(sum of D, sum of I, element count) over the group's parameters that have a Fisher."""
    d_sum, i_sum, count = 0.0, 0.0, 0
    for n in dict.fromkeys(canonical_name(x) for x in names):  # dedupe, keep order
        d = D.get(n)
        if d is None or not d.numel():
            continue
        d_sum += float(d.double().sum())
        count += d.numel()
        if I is not None and n in I:
            i_sum += float(I[n].double().sum())
    return d_sum, i_sum, count


def _score(d_sum: float, i_sum: float, count: int, relative: bool) -> float:
    """Relative: sum D / sum I (0 for a group no demographic group uses); absolute: mean D."""
    if relative:
        return d_sum / i_sum if i_sum > 0 else 0.0
    return d_sum / count


def rank_groups_by_disparity(space: SpaceLike, D: Mapping[str, Tensor],
                             I: Optional[Mapping[str, Tensor]] = None) -> list[tuple[int, str, float]]:
    """``[(bit_index, group_name, score)]`` sorted by score, highest first (ties: lower bit first).

    With ``I`` (the neutralised importance at gamma = 0) the score is the relative disparity
    R = sum D / sum I over the group's elements (module docstring); this is what the prior uses.
    Without it, the absolute score mean(D), kept for comparison. Groups with no Fisher parameters
    are left out (they are not freezing candidates).
    """
    Dc = {canonical_name(k): v for k, v in D.items()}
    Ic = {canonical_name(k): v for k, v in I.items()} if I is not None else None
    ranked: list[tuple[int, str, float]] = []
    for bit, (names, gname) in enumerate(zip(space.param_groups, space.group_names)):
        d_sum, i_sum, count = _group_sums(names, Dc, Ic)
        if count:
            ranked.append((bit, str(gname), _score(d_sum, i_sum, count, relative=Ic is not None)))
    ranked.sort(key=lambda t: (-t[2], t[0]))
    return ranked


def prior_masks(space: SpaceLike, D: Mapping[str, Tensor], ks: Iterable[int] = (1, 2, 3),
                I: Optional[Mapping[str, Tensor]] = None) -> list[str]:
    """Mask bit strings: all ones with the top-k most group-specific groups set to '0', per k.

    Ranked as ``rank_groups_by_disparity(space, D, I)`` (pass ``I`` for the relative disparity).
    k is clipped to the number of candidate groups; duplicates are dropped (order kept).
    """
    n_bits = len(space.param_groups)
    ranked = rank_groups_by_disparity(space, D, I)
    masks: list[str] = []
    for k in ks:
        bits = ["1"] * n_bits
        for bit, _, _ in ranked[: max(0, min(int(k), len(ranked)))]:
            bits[bit] = "0"
        m = "".join(bits)
        if m not in masks:
            masks.append(m)
    return masks
