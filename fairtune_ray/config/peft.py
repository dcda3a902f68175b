"""The ``peft`` section: PEFT methods (HF peft) whose adapters the mask places (docs/design.md#mask-spaces)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from fairtune_ray.config.base import StrictSection

PeftName = Literal["mask", "lora", "dora", "ia3", "loha"]
"""'mask' inserts no adapter; the others are the PEFT methods of ``models/adapters.py``."""


class PeftConfig(StrictSection):
    """How the trained groups are trained. With 'mask' a group whose bit is on trains its own weights;
    with a PEFT method its linears of the chosen kinds get adapters instead (the mask bits decide where
    adapters go), every base weight is frozen and the head trains. The fixed baselines `lora`, `dora`,
    `ia3` and `loha` use `rank`, `alpha` and `targets`; the search draws from `methods`, `ranks`,
    `alphas` and `target_sets`."""

    methods: list[PeftName] = Field(["mask"], description=(
        "Values of the search's `peft` dimension: 'mask' (the groups that are on train their weights), 'lora', "
        "'dora', 'ia3' or 'loha' (adapters in the groups that are on). [mask] adds no dimension: the search "
        "space is the mask bits and lr alone. With more values, `peft_rank`, `peft_alpha` and `peft_targets` "
        "join the space as flat dimensions, ignored by trials that draw 'mask' (rank and alpha by 'ia3' too)."))
    ranks: list[int] = Field([4, 8], description="Adapter ranks the search chooses from (not read by 'ia3').")
    alphas: list[float] = Field([8.0, 16.0], description=(
        "Adapter alphas (scaling alpha / rank) the search chooses from (not read by 'ia3')."))
    target_sets: list[list[str]] = Field([["qkv", "proj", "fc1", "fc2"], ["qkv", "proj"], ["fc1", "fc2"]],
                                         description=(
        "Sets of target kinds the search chooses from: an adapter goes into a linear whose name ends in one "
        "of the set's kinds (qkv, proj, fc1, fc2 in a timm ViT block) and whose mask group is on."))
    rank: int = Field(4, ge=1, description="Adapter rank of the PEFT baselines and of `fairtune-ray finetune --peft`.")
    alpha: Optional[float] = Field(None, gt=0, description=(
        "Adapter alpha of the PEFT baselines and of `finetune --peft`; null = the rank (scaling 1)."))
    targets: list[str] = Field(["qkv", "proj", "fc1", "fc2"], description=(
        "Target kinds of the PEFT baselines and of `finetune --peft`; checked against the backbone before Ray "
        "starts (a ResNet has no such linears)."))

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"methods must be a non-empty list without repeats, got {v}")
        return v

    @field_validator("ranks")
    @classmethod
    def _ranks(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError(f"ranks must be a non-empty list of integers >= 1, got {v}")
        return v

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, v: list[float]) -> list[float]:
        if not v or min(v) <= 0:
            raise ValueError(f"alphas must be a non-empty list of positive numbers, got {v}")
        return v

    @field_validator("target_sets")
    @classmethod
    def _target_sets(cls, v: list[list[str]]) -> list[list[str]]:
        if not v or any(not s for s in v):
            raise ValueError(f"target_sets must be a non-empty list of non-empty lists of kinds, got {v}")
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("targets must name at least one kind, e.g. [qkv, proj, fc1, fc2]")
        return v

    @property
    def searched(self) -> bool:
        """The search has a `peft` dimension (``methods`` is more than [mask])."""
        return self.methods != ["mask"]
