"""The ``fisher`` section: options of the Fisher method (``search.method: fisher`` or ``both``)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field

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
    ranks: list[int] = Field([4, 8], description="SVD ranks r the search chooses from for factorised layers.")
    factorise: list[str] = Field(["head"], description=(
        "Linear layers the search may replace by rank-r Fisher-weighted SVD factors: 'head', 'qkv', "
        "'proj', 'fc1', 'fc2' (in every block) or a module path; it chooses between none and all of them."))
    prior_k: list[int] = Field([1, 2, 3], description=(
        "Seed masks of the Fisher prior (method 'both'): for each k, every mask bit on except the k "
        "parameter groups with the highest disparity."))
    importance_path: Optional[str] = Field(None, description=(
        "Set by the search, not by hand: the cached importance.pt that trials and retrains read I' from."))
