"""What one inner fine-tune trains: the point in the search space a trial evaluates."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class TrialSpec:
    """A configuration of the search space, independent of how it is run.

    ``mask`` is ``space:bits`` or a baseline name (full, linear, bitfit, attn_only, norm_only, lora).
    The Fisher fields are inactive at their defaults (lambda 0, no factorised layers).
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

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def uses_fisher(self) -> bool:
        return self.ewc_lambda > 0 or (self.rank > 0 and bool(self.factorise))

    def short_name(self) -> str:
        """A compact human label for run names: method and mask in short form."""
        if self.label:
            return self.label
        if ":" in self.mask:
            space, bits = self.mask.split(":", 1)
            name = f"{space}[{bits.count('1')}/{len(bits)}]"
        else:
            name = self.mask
        if self.uses_fisher:
            name += f"+fisher(l={self.ewc_lambda:.3g},r={self.rank})"
        return name
