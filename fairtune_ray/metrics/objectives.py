"""Search objectives: named metrics with a direction, and linear combinations of them (docs/design.md#objectives-and-metrics).

The config names its objective as text (``train.objective``); parsing it here, at config load,
turns a typo into a config error before any Ray process starts instead of a KeyError mid-search.
A combination's direction comes from its terms, never a default: ``auc_gap + eodds_diff`` used to be
maximised, i.e. the search rewarded unfairness. Terms that pull opposite ways are a config error.
fairlearn's names are accepted for ours (``equalized_odds_difference`` is ``eodds_diff``; ``names.FAIRLEARN_ALIASES``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, Mapping, Optional

from fairtune_ray.metrics.names import FAIRLEARN_ALIASES, canonical_metric

__all__ = ["Objective", "OBJECTIVES", "parse_objective", "list_objectives", "term_mode"]

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
    "es_auc": "max",
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
_MODE_PREFIX = re.compile(r"(max|min)\s*:")


def list_objectives() -> list[str]:
    """Registered objective names (each also usable as a term in a combination)."""
    return list(OBJECTIVES)


def _known() -> str:
    return ", ".join(f"{n} ({o.mode})" for n, o in OBJECTIVES.items())


def _aliases() -> str:
    return "fairlearn's names also work: " + ", ".join(f"{a} = {n}" for a, n in FAIRLEARN_ALIASES.items())


def term_mode(metric: str, coef: float) -> Mode:
    """The way a term pulls: its metric's direction, flipped by a negative coefficient."""
    mode = OBJECTIVES[metric].mode
    return mode if coef >= 0 else ("min" if mode == "max" else "max")


def _pretty(terms: Mapping[str, float]) -> str:
    """Canonical text of a combination; it parses back to the same terms."""
    return " ".join(
        (("-" if c < 0 else "") if i == 0 else ("- " if c < 0 else "+ "))
        + (f"{abs(c):g}*" if abs(c) != 1.0 else "")
        + n
        for i, (n, c) in enumerate(terms.items())
    )


def _flipped(terms: Mapping[str, float], towards: Mode) -> dict[str, float]:
    """``terms`` with the sign changed on every term that does not pull ``towards``."""
    return {n: (c if c == 0 or term_mode(n, c) == towards else -c) for n, c in terms.items()}


def _listed(terms: Mapping[str, float], word: str) -> str:
    names = ", ".join(_pretty({n: c}) for n, c in terms.items())
    return f"{word} terms ({names})" if len(terms) > 1 else f"a {word} term ({names})"


def _combined_mode(label: str, terms: Mapping[str, float], requested: Optional[Mode]) -> Mode:
    """The one direction every non-zero term pulls (and the requested one, if any), else a ValueError
    that spells the consistent ways to write the objective."""
    pulls = {n: term_mode(n, c) for n, c in terms.items() if c != 0}
    if not pulls:
        raise ValueError(f"objective '{label}' has only zero coefficients")
    up = {n: terms[n] for n, m in pulls.items() if m == "max"}
    down = {n: terms[n] for n, m in pulls.items() if m == "min"}
    say = (lambda m: f"{m}: ") if requested else (lambda m: "")
    fix = (f"to maximise, write '{say('max')}{_pretty(_flipped(terms, 'max'))}'; "
           f"to minimise, write '{say('min')}{_pretty(_flipped(terms, 'min'))}'")
    if up and down:
        raise ValueError(f"objective '{label}' mixes {_listed(up, 'maximised')} with {_listed(down, 'minimised')}: "
                         f"their sum cannot improve both; {fix}")
    mode: Mode = "max" if up else "min"
    if requested is not None and requested != mode:
        word = {"max": "maximised", "min": "minimised"}
        raise ValueError(f"objective '{label}' asks to be {word[requested]} but its terms are {word[mode]} "
                         f"({', '.join(_pretty({n: c}) for n, c in terms.items() if c != 0)}); {fix}")
    return mode


def parse_objective(text: str, mode: Optional[Mode] = None) -> Objective:
    """A registered name (``"min_auc"``) or a linear combination (``"min_auc - 0.5*auc_gap"``); fairlearn's
    names stand for ours (``"min_auc - 0.5*equalized_odds_difference"`` is ``"min_auc - 0.5*eodds_diff"``).

    A term pulls the way its metric is better (``min_auc`` up, ``auc_gap`` down), reversed by a
    negative coefficient; a combination is maximised when every term pulls up, minimised when every
    term pulls down, and a ValueError when they disagree: whichever way such a sum is optimised, one
    metric is driven the wrong way. ``mode`` (or a ``"max:"`` / ``"min:"`` prefix of ``text``) states the intended
    direction; a disagreement with it is also an error. Unknown metrics and bad syntax raise
    ``ValueError`` listing the known names.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty objective; known: {_known()}")
    src = text.strip()
    prefix = _MODE_PREFIX.match(src)
    if prefix:
        if mode is not None and mode != prefix.group(1):
            raise ValueError(f"objective '{src}' says '{prefix.group(1)}:' but mode '{mode}' was requested")
        mode, src = prefix.group(1), src[prefix.end():].strip()  # type: ignore[assignment]
        if not src:
            raise ValueError(f"empty objective after '{prefix.group(0).strip()}'; known: {_known()}")
    if mode not in (None, "max", "min"):
        raise ValueError(f"objective mode must be 'max' or 'min', got {mode!r}")
    if canonical_metric(src) in OBJECTIVES and (mode is None or OBJECTIVES[canonical_metric(src)].mode == mode):
        return OBJECTIVES[canonical_metric(src)]

    terms = _parse_terms(src)
    inferred = _combined_mode(text.strip(), terms, mode)
    if len(terms) == 1 and next(iter(terms.values())) == 1.0:
        return OBJECTIVES[next(iter(terms))]
    return Objective(_pretty(terms), terms, inferred)


def _parse_terms(src: str) -> dict[str, float]:
    """``{metric: coefficient}`` of a sum of terms such as ``min_auc - 0.5*auc_gap``."""
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
        name = canonical_metric(m.group("name"))
        if name not in OBJECTIVES:
            raise ValueError(f"unknown metric '{name}' in objective '{src}'; known: {_known()}; {_aliases()}")
        if m.group("pre") and m.group("post"):
            raise ValueError(f"term '{m.group(0).strip()}' in objective '{src}' has two coefficients")
        coef = float(m.group("pre") or m.group("post") or 1.0)
        if m.group("sign") == "-":
            coef = -coef
        terms[name] = terms.get(name, 0.0) + coef
        pos = m.end()
        first = False
    return terms
