"""Search objectives: named metrics with a direction, and linear combinations of them (docs/design.md#objectives-and-metrics).

The config names its objective as text (``train.objective``); parsing it here, at config load,
turns a typo into a config error before any Ray process starts instead of a KeyError mid-search.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, Mapping

__all__ = ["Objective", "OBJECTIVES", "parse_objective", "list_objectives"]

Mode = Literal["max", "min"]


@dataclass(frozen=True)
class Objective:
    """``value = sum(coef * metrics[prefix + metric])``, to be maximised or minimised."""

    name: str
    terms: dict[str, float] = field(default_factory=dict)
    mode: Mode = "max"

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"objective mode must be 'max' or 'min', got {self.mode!r}")
        if not self.terms:
            raise ValueError("an objective needs at least one metric term")

    def value(self, metrics: Mapping[str, float], prefix: str = "") -> float:
        """Objective value from a flat metrics dict; NaN if any term is NaN (e.g. undefined AUC)."""
        total = 0.0
        for metric, coef in self.terms.items():
            key = prefix + metric
            if key not in metrics:
                raise KeyError(
                    f"objective '{self.name}' needs metric '{key}', which is not among the "
                    f"{len(metrics)} reported metrics (wrong prefix?)"
                )
            total += coef * float(metrics[key])
        return total

    def better(self, a: float, b: float) -> bool:
        """True when value ``a`` is strictly better than ``b``; NaN is never better, always worse."""
        a_ok, b_ok = not math.isnan(a), not math.isnan(b)
        if not a_ok:
            return False
        if not b_ok:
            return True
        return a > b if self.mode == "max" else a < b

    @property
    def sign(self) -> float:
        """+1 for max, -1 for min: multiply to get a quantity to maximise (e.g. for Ray Tune)."""
        return 1.0 if self.mode == "max" else -1.0


_DIRECTIONS: dict[str, Mode] = {
    "min_auc": "max",
    "auc_gap": "min",
    "min_acc": "max",
    "acc_gap": "min",
    "overall_auc": "max",
    "max_group_loss": "min",
    "eodds_diff": "min",
    "eop_diff": "min",
    "dp_diff": "min",
    "underdiag_gap": "min",
    "overall_acc": "max",
    "overall_bce": "min",
    "overall_ece": "min",
}

#: registered single-metric objectives
OBJECTIVES: dict[str, Objective] = {n: Objective(n, {n: 1.0}, m) for n, m in _DIRECTIONS.items()}

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_TERM = re.compile(
    rf"\s*(?P<sign>[+-])?\s*"
    rf"(?:(?P<pre>{_NUM})\s*\*?\s*)?"
    rf"(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    rf"(?:\s*\*\s*(?P<post>{_NUM}))?\s*"
)


def list_objectives() -> list[str]:
    """Registered objective names (each also usable as a term in a combination)."""
    return list(OBJECTIVES)


def _known() -> str:
    return ", ".join(f"{n} ({o.mode})" for n, o in OBJECTIVES.items())


def parse_objective(text: str) -> Objective:
    """A registered name (``"min_auc"``) or a linear combination (``"min_auc - 0.5*auc_gap"``).

    Combinations are maximised: write minimised metrics with a negative coefficient.
    Raises ``ValueError`` naming the unknown metric / bad syntax and listing the known names.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty objective; known: {_known()}")
    src = text.strip()
    if src in OBJECTIVES:
        return OBJECTIVES[src]

    terms: dict[str, float] = {}
    pos = 0
    first = True
    while pos < len(src):
        m = _TERM.match(src, pos)
        if m is None or m.end() == pos or (not first and m.group("sign") is None):
            raise ValueError(
                f"cannot parse objective '{src}' near '{src[pos:].strip()}': expected terms like "
                f"'min_auc - 0.5*auc_gap'; known metrics: {_known()}"
            )
        name = m.group("name")
        if name not in OBJECTIVES:
            raise ValueError(f"unknown metric '{name}' in objective '{src}'; known: {_known()}")
        if m.group("pre") and m.group("post"):
            raise ValueError(f"term '{m.group(0).strip()}' in objective '{src}' has two coefficients")
        coef = float(m.group("pre") or m.group("post") or 1.0)
        if m.group("sign") == "-":
            coef = -coef
        terms[name] = terms.get(name, 0.0) + coef
        pos = m.end()
        first = False

    if len(terms) == 1 and next(iter(terms.values())) == 1.0:
        return OBJECTIVES[next(iter(terms))]
    pretty = " ".join(
        (("-" if c < 0 else "") if i == 0 else ("- " if c < 0 else "+ "))
        + (f"{abs(c):g}*" if abs(c) != 1.0 else "")
        + n
        for i, (n, c) in enumerate(terms.items())
    )
    return Objective(pretty, terms, "max")
