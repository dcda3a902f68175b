"""The Fisher prior ranks parameter groups by disparity RELATIVE to importance (issue 15, item 5).

Constructed case, two demographic groups a and b and three mask groups:
* ``shared``: both demographic groups rely on it heavily, b somewhat more (a large absolute D
  from a small relative difference);
* ``specific``: only group a uses it (its weights matter to one demographic group only);
* ``idle``: nobody uses it much, and alike.
The absolute disparity (mean D) ranks ``shared`` first, though it is the least group-specific
used group; the relative disparity (sum D / sum I) ranks ``specific`` first, and the prior freezes
it first.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fairtune_ray.fisher.neutralise import neutralised_importance
from fairtune_ray.fisher.prior import prior_masks, rank_groups_by_disparity

SPACE = SimpleNamespace(param_groups=[["shared.weight"], ["specific.weight"], ["idle.weight"]],
                        group_names=["shared", "specific", "idle"])


def _fisher() -> dict[int, dict[str, torch.Tensor]]:
    """Each group's Fisher already sums to 1 (normalisation leaves it as is); ``shared`` has 32
    elements, the others 64, so its mean D is twice ``specific``'s for the same summed D."""
    return {
        0: {"shared.weight": torch.full((32,), 0.02), "specific.weight": torch.full((64,), 0.005),
            "idle.weight": torch.full((64,), 0.000625)},
        1: {"shared.weight": torch.full((32,), 0.03), "specific.weight": torch.zeros(64),
            "idle.weight": torch.full((64,), 0.000625)},
    }


def test_relative_disparity_ranks_the_group_specific_weights_first():
    I, D = neutralised_importance(_fisher(), gamma=0.0)
    absolute = rank_groups_by_disparity(SPACE, D)
    relative = rank_groups_by_disparity(SPACE, D, I)
    assert absolute[0][1] == "shared"  # importance dominates the absolute score
    assert [name for _, name, _ in relative] == ["specific", "shared", "idle"]
    # only group a uses `specific`: |F^a_n - 0| / ((F^a_n + 0) / 2) = 2, the maximum for two groups
    assert relative[0][2] == pytest.approx(2.0, rel=1e-6)
    assert relative[2][2] == pytest.approx(0.0, abs=1e-6)  # used alike: not group-specific
    assert relative[1][2] == pytest.approx(0.4, rel=1e-5)  # sum D 0.32 over sum I 0.8


def test_the_prior_freezes_the_group_specific_weights_first():
    I, D = neutralised_importance(_fisher(), gamma=0.0)
    assert prior_masks(SPACE, D, ks=(1, 2), I=I) == ["101", "001"]
    assert prior_masks(SPACE, D, ks=(1,)) == ["011"]  # the absolute ranking would freeze `shared`
