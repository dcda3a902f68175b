"""What one inner fine-tune trains: the point in the search space a trial evaluates."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from fairtune_ray.config import PeftConfig
from fairtune_ray.models import DEFAULT_KINDS, NO_ADAPTER, AdapterSpec, peft_method_names


@dataclass
class TrialSpec:
    """A configuration of the search space, independent of how it is run.

    ``mask`` is ``space:bits`` or a baseline name (full, linear, bitfit, attn_only, norm_only, or a PEFT
    method: lora, dora, ia3, loha). ``peft`` is 'mask' (the groups that are on train their weights) or a
    PEFT method whose adapters go where the mask is on, with ``peft_rank``, ``peft_alpha`` and the target
    kinds ``peft_targets``; a PEFT baseline mask implies its own method. The Fisher fields are inactive at
    their defaults (lambda 0, no factorised layers).
    """

    mask: str = "full"
    lr: float = 5e-4
    seed: int = 0
    epochs: Optional[int] = None
    ewc_lambda: float = 0.0
    gamma: float = 0.0
    rank: int = 0
    factorise: list[str] = field(default_factory=list)
    label: str = ""
    peft: str = NO_ADAPTER
    peft_rank: int = 4
    peft_alpha: Optional[float] = None
    peft_targets: list[str] = field(default_factory=lambda: list(DEFAULT_KINDS))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def uses_fisher(self) -> bool:
        return self.ewc_lambda > 0 or (self.rank > 0 and bool(self.factorise))

    @property
    def peft_method(self) -> str:
        """The PEFT method that inserts adapters ('' for none): ``peft``, or the PEFT baseline's own."""
        if self.peft != NO_ADAPTER:
            return self.peft
        return self.mask if self.mask in peft_method_names() else ""

    def adapters(self) -> Optional[AdapterSpec]:
        """The adapters ``apply_mask`` inserts, or None."""
        method = self.peft_method
        if not method:
            return None
        return AdapterSpec(method, int(self.peft_rank), self.peft_alpha, tuple(self.peft_targets))

    def short_name(self) -> str:
        """A compact human label for run names: method and mask in short form."""
        if self.label:
            return self.label
        if ":" in self.mask:
            space, bits = self.mask.split(":", 1)
            name = f"{space}[{bits.count('1')}/{len(bits)}]"
        else:
            name = self.mask
        if self.peft_method and self.peft_method != self.mask:
            name += f"+{self.peft_method}"
        if self.uses_fisher:
            name += f"+fisher(l={self.ewc_lambda:.3g},r={self.rank})"
        return name


def with_peft(spec: TrialSpec, cfg: PeftConfig, method: str) -> TrialSpec:
    """``spec`` with the PEFT method ``method`` ('mask': none) at the ``peft`` section's fixed settings
    (``rank``, ``alpha``, ``targets``): the PEFT baselines and ``finetune --peft``."""
    spec.peft, spec.peft_rank, spec.peft_alpha, spec.peft_targets = method, cfg.rank, cfg.alpha, list(cfg.targets)
    return spec
