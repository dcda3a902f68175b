"""``search.constraint``: "maximise the objective subject to a bound on a validation metric".

Fairness-aware Bayesian optimisation states fairness as a constraint rather than a term of the
objective: ``train.objective: overall_auc`` with ``search.constraint: "min_auc >= 0.75"``. A bound
may also be relative to a baseline point of the search (``"auc_gap <= full"``: no larger gap than
the full fine-tuning trial reached on validation), optionally with an offset (``full + 0.02``);
several bounds are joined by ``and``. fairlearn's metric names are accepted and read as ours
(``equalized_odds_difference <= 0.1`` is ``eodds_diff <= 0.1``). The text is parsed here, at config load,
so a typo is a config error; what a trial's feasibility means for the search lives in
``fairtune_ray.search.constraint``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Mapping, Optional, Sequence

__all__ = ["Bound", "Constraint", "parse_constraint", "known_metrics", "search_baselines", "BASELINE_POINTS"]

#: the baseline points every search evaluates first, in order (``search/space.py:baseline_points``)
BASELINE_POINTS: dict[str, tuple[str, ...]] = {
    "fairtune": ("full", "linear"), "both": ("full", "linear"), "fisher": ("full",)}

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_BOUND = re.compile(r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>>=|<=|==|=|>|<|!=)\s*(?P<rhs>.*?)\s*$")
_RHS_NUMBER = re.compile(rf"^(?P<value>{_NUM})$")
_RHS_BASELINE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\s*(?P<sign>[+-])\s*(?P<offset>"
                           r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?))?$")
EXAMPLES = "e.g. 'min_auc >= 0.75', 'auc_gap <= full', 'auc_gap <= full + 0.02 and min_auc >= 0.7'"


@dataclass(frozen=True)
class Bound:
    """``metric op value``, or ``metric op <baseline's value> + offset`` until ``resolve`` fixes it."""

    metric: str
    op: str  # ">=" or "<="
    value: Optional[float] = None
    baseline: Optional[str] = None
    offset: float = 0.0

    @property
    def relative(self) -> bool:
        return self.value is None

    @property
    def text(self) -> str:
        if not self.relative:  # repr: the text parses back to the same float
            return f"{self.metric} {self.op} {self.value!r}"
        tail = f" {'+' if self.offset > 0 else '-'} {abs(self.offset):g}" if self.offset else ""
        return f"{self.metric} {self.op} {self.baseline}{tail}"

    def resolve(self, baseline_value: float) -> "Bound":
        """The absolute bound, given the baseline's value of ``metric``."""
        return Bound(self.metric, self.op, float(baseline_value) + self.offset)

    def violation(self, metrics: Mapping[str, float], prefix: str = "") -> float:
        """How far the metric lies on the wrong side (0 when the bound holds; inf when it is undefined)."""
        if self.relative:
            raise ValueError(f"bound '{self.text}' is relative to a baseline: resolve it first")
        try:
            v = float(metrics[prefix + self.metric])
        except (KeyError, TypeError, ValueError):
            return math.inf
        if math.isnan(v):
            return math.inf
        return max(0.0, self.value - v) if self.op == ">=" else max(0.0, v - self.value)


@dataclass(frozen=True)
class Constraint:
    """Bounds that must all hold; the violation is the sum of theirs, in the metrics' units."""

    text: str
    bounds: tuple[Bound, ...]

    @property
    def baselines(self) -> list[str]:
        """The baselines the relative bounds refer to, in order of appearance."""
        return list(dict.fromkeys(b.baseline for b in self.bounds if b.relative))

    @property
    def resolved_text(self) -> str:
        return " and ".join(b.text for b in self.bounds)

    def absolute_part(self) -> Optional["Constraint"]:
        """The bounds that need no baseline (what a trial can check on its own), or None."""
        fixed = tuple(b for b in self.bounds if not b.relative)
        return replace(self, bounds=fixed) if fixed else None

    def resolve(self, baseline_values: Mapping[str, Mapping[str, float]]) -> "Constraint":
        """Every relative bound fixed at ``baseline_values[baseline][metric]`` (+ offset)."""
        return replace(self, bounds=tuple(b.resolve(baseline_values[b.baseline][b.metric]) if b.relative else b
                                          for b in self.bounds))

    def violation(self, metrics: Mapping[str, float], prefix: str = "") -> float:
        return sum(b.violation(metrics, prefix) for b in self.bounds)

    def holds(self, metrics: Mapping[str, float], prefix: str = "") -> bool:
        return self.violation(metrics, prefix) == 0.0


def _canonical(name: str) -> str:
    """Our name for a metric named in fairlearn's vocabulary (``metrics.names.FAIRLEARN_ALIASES``)."""
    from fairtune_ray.metrics.names import canonical_metric  # lazy: as in known_metrics (scikit-learn at CLI start-up)

    return canonical_metric(name)


def known_metrics() -> list[str]:
    """Metric names a bound may use: the cross-group metrics and the registered objectives."""
    # lazy: fairtune_ray.metrics loads scikit-learn (~1.4 s); config is imported at CLI start-up
    from fairtune_ray.metrics.names import OVERALL_METRICS
    from fairtune_ray.metrics.objectives import OBJECTIVES

    return list(dict.fromkeys([*OVERALL_METRICS, *OBJECTIVES]))


def search_baselines(method: str, num_samples: int) -> tuple[str, ...]:
    """The baseline points a search with this method and size evaluates (its first points)."""
    return BASELINE_POINTS.get(method, ())[:num_samples]


def parse_constraint(text: str, baselines: Sequence[str], metrics: Optional[Sequence[str]] = None) -> Constraint:
    """``"<metric> >=|<= <number | baseline [+|- number]>"``, joined by ``and``; a metric named in fairlearn's
    vocabulary is stored under our name.

    Raises ``ValueError`` naming the bad part and listing the known metrics and ``baselines``.
    """
    metrics = list(metrics) if metrics is not None else known_metrics()
    hint = (f"{EXAMPLES}; known metrics: {', '.join(metrics)}; baselines of this search: "
            f"{', '.join(baselines) or 'none'}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty constraint; {hint}")
    parts = re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE)
    return Constraint(text.strip(), tuple(_parse_bound(p, text, baselines, metrics, hint) for p in parts))


def _parse_bound(part: str, text: str, baselines: Sequence[str], metrics: Sequence[str], hint: str) -> Bound:
    m = _BOUND.match(part)
    if m is None:
        raise ValueError(f"cannot parse '{part.strip()}' in constraint '{text}': expected "
                         f"'<metric> >= <number or baseline>'; {hint}")
    metric, op, rhs = _canonical(m.group("metric")), m.group("op"), m.group("rhs")
    if metric not in metrics:
        raise ValueError(f"unknown metric '{metric}' in constraint '{text}'; {hint} (or fairlearn's names, "
                         f"e.g. equalized_odds_difference)")
    if op not in (">=", "<="):
        raise ValueError(f"operator '{op}' in constraint '{text}': use >= or <=; {hint}")
    number = _RHS_NUMBER.match(rhs)
    if number is not None:
        return Bound(metric, op, float(number.group("value")))
    rel = _RHS_BASELINE.match(rhs)
    if rel is None:
        raise ValueError(f"cannot read the bound '{rhs}' in constraint '{text}': a number or a baseline "
                         f"(optionally + or - a number); {hint}")
    name = rel.group("name")
    if name not in baselines:
        raise ValueError(f"'{name}' in constraint '{text}' is neither a number nor a baseline point of this "
                         f"search; {hint}")
    offset = float(rel.group("offset") or 0.0) * (-1.0 if rel.group("sign") == "-" else 1.0)
    return Bound(metric, op, None, name, offset)
