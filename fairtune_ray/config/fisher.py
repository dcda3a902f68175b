"""The ``fisher`` section: options of the Fisher method (``search.method: fisher`` or ``both``)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field, field_validator

from fairtune_ray.config.base import StrictSection


class FisherConfig(StrictSection):
    """Per-group Fisher, neutralised importance I' and its three uses: an EWC penalty, Fisher-weighted
    SVD factors, and seed masks for the search (docs/design.md#fisher-neutralisation). Read only when
    ``search.method`` is 'fisher' or 'both'."""

    samples_per_group: int = Field(64, ge=2, description=(
        "Training images per demographic group the Fisher is estimated on (all of a smaller group)."))
    chunk_size: int = Field(32, ge=1, description=(
        "Samples per vmap(grad) call: memory against speed; the result does not depend on it."))
    gamma: list[float] = Field([0.0, 1.0], description=(
        "Values the search chooses gamma from, in `I' = I * exp(-gamma * D / mean(D))`; 0 leaves I' = I, "
        "larger values down-weight weights the groups use differently."))
    ewc_lambda_max: float = Field(100.0, ge=0, description=(
        "Upper end of the log-uniform EWC strength lambda (the range spans four decades below it); a "
        "separate on/off choice lets the search leave the penalty out."))
    ranks: list[int] = Field([4, 8], description=(
        "SVD ranks r the search chooses from for factorised layers (searched only when `factorise` names "
        "some). Each must compress every target, r(m+n) < mn for its m x n weight: checked before Ray starts."))
    factorise: list[str] = Field(["qkv", "proj", "fc1", "fc2"], description=(
        "Linear layers the search may replace by rank-r Fisher-weighted SVD factors: 'qkv', 'proj', 'fc1', "
        "'fc2' (in every ViT block), 'head' or a module path; it chooses between none and all of them. A "
        "factorised layer trains only where the mask trains its weight. A name that matches no layer (the "
        "block names on a CNN) or a layer that no rank compresses (the one-logit head) is an error; [] "
        "turns factorisation off."))
    prior_k: list[int] = Field([1, 2, 3], description=(
        "Seed masks of the Fisher prior (method 'both'): for each k, every mask bit on except the k "
        "parameter groups with the highest relative disparity (sum of D over sum of I in the group)."))
    fit_head: bool = Field(True, description=(
        "Fit the new one-logit head by a linear probe on the frozen backbone's pooled features before the "
        "Fisher pass, so the Fisher is taken at (pre-trained backbone, fitted head) rather than through a "
        "random readout; every model of the study (trials, baselines, retrains) starts from that head. "
        "false: the old random head."))
    head_samples: int = Field(2048, ge=2, description=(
        "Training images the head is fitted on: all of a smaller training split, else a seeded draw."))
    head_l2: float = Field(0.01, gt=0, description=(
        "L2 strength of the head's logistic regression (on standardised features, added to the mean "
        "training loss): it makes the fit unique, so the head does not depend on its initialisation."))
    head_steps: int = Field(200, ge=1, description="Iterations of the full-batch L-BFGS fit of the head.")
    head_seeds: int = Field(1, ge=1, description=(
        "Heads the Fisher is averaged over: the first is fitted on all head_samples rows (trials start "
        "from it), each further one on a seeded bootstrap resample of them."))
    importance_path: Optional[str] = Field(None, description=(
        "Set by the search, not by hand: the cached importance.pt that trials and retrains read I' from."))

    @field_validator("ranks")
    @classmethod
    def _ranks_positive(cls, ranks: list[int]) -> list[int]:
        """A rank below 1 has no factors, and an empty list leaves nothing to search."""
        if not ranks or min(ranks) < 1:
            raise ValueError(f"ranks must be a non-empty list of integers >= 1, got {ranks}")
        return ranks
