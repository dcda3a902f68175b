"""A search prior from Fisher disparity (docs/design.md#fisher-neutralisation (c)).

Each mask bit of a ``MaskSpace`` switches a group of parameters. A group whose weights have a
high disparity D is used very differently by the demographic groups, so training it risks
fitting the majority at the expense of the minority: such groups are candidates to FREEZE. The
masks produced here (all ones except the top-k most group-specific groups) seed the search
through ``points_to_evaluate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from torch import Tensor

from .penalty import canonical_name

__all__ = ["rank_groups_by_disparity", "prior_masks", "SpaceLike"]


class SpaceLike(Protocol):
    """The part of ``fairtune_ray.models.MaskSpace`` this module needs."""

    param_groups: Sequence[Sequence[str]]
    group_names: Sequence[str]


def rank_groups_by_disparity(space: SpaceLike, D: Mapping[str, Tensor]) -> list[tuple[int, str, float]]:
    """``[(bit_index, group_name, score)]`` sorted by score, highest first (ties: lower bit first).

    score = mean of D over every element of the group's parameters that appear in D. Groups
    with no Fisher parameters are left out (they are not freezing candidates).
    """
    Dc = {canonical_name(k): v for k, v in D.items()}
    ranked: list[tuple[int, str, float]] = []
    for bit, (names, gname) in enumerate(zip(space.param_groups, space.group_names)):
        total, count = 0.0, 0
        for n in dict.fromkeys(canonical_name(x) for x in names):  # dedupe, keep order
            d = Dc.get(n)
            if d is not None and d.numel():
                total += float(d.double().sum())
                count += d.numel()
        if count:
            ranked.append((bit, str(gname), total / count))
    ranked.sort(key=lambda t: (-t[2], t[0]))
    return ranked


def prior_masks(space: SpaceLike, D: Mapping[str, Tensor], ks: Iterable[int] = (1, 2, 3)) -> list[str]:
    """Mask bit strings: all ones with the top-k most group-specific groups set to '0', per k.

    k is clipped to the number of candidate groups; duplicates are dropped (order kept).
    """
    n_bits = len(space.param_groups)
    ranked = rank_groups_by_disparity(space, D)
    masks: list[str] = []
    for k in ks:
        bits = ["1"] * n_bits
        for bit, _, _ in ranked[: max(0, min(int(k), len(ranked)))]:
            bits[bit] = "0"
        m = "".join(bits)
        if m not in masks:
            masks.append(m)
    return masks
