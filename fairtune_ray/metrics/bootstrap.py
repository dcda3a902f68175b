"""Bootstrap confidence intervals for subgroup metrics, stratified by group x label
(docs/design.md#objectives-and-metrics).

Resampling within each group's positives and within its negatives keeps every group's size and
class counts fixed, so a small minority group cannot vanish from (or be inflated in) a replicate,
and a group whose AUC is defined on the full split is defined in every replicate: an aggregate
such as ``min_auc`` is always taken over the same groups as its point estimate. (Stratifying by
group alone let a minority with 2 positives lose both in a share of replicates, and ``min_auc``
of those replicates silently became the minimum over the other groups.) With several retrain seeds the same
resampled indices are applied to every seed's scores, so the interval covers sampling noise of
the seed-averaged metric rather than mixing in seed-to-seed pairing noise.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from fairtune_ray.metrics.names import UndefinedGroupMetricWarning
from fairtune_ray.metrics.objectives import Objective
from fairtune_ray.metrics.subgroup import _compute, _validate

__all__ = ["bootstrap_intervals", "objective_bound", "stratified_indices"]

ArrayLike = Union[np.ndarray, Sequence[float]]


def _strata_codes(groups: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
    """One code per (group, label) cell; per group only when ``labels`` is None."""
    g = np.asarray(groups)
    if labels is None:
        return g
    _, codes = np.unique(np.stack([g, np.asarray(labels)]), axis=1, return_inverse=True)
    return codes.reshape(-1)


def stratified_indices(groups: np.ndarray, rng: np.random.Generator, labels: Optional[np.ndarray] = None) -> np.ndarray:
    """One replicate: indices drawn with replacement within each group (x label, when given), so the
    size of every group (and its count of each class) is unchanged."""
    cells = _strata_codes(groups, labels)
    out = np.empty(cells.size, dtype=np.int64)
    for code in np.unique(cells):
        members = np.flatnonzero(cells == code)
        out[members] = members[rng.integers(0, members.size, members.size)]
    return out


class _Strata:
    """Precomputed group x label membership so each replicate is a few vectorised draws."""

    def __init__(self, groups: np.ndarray, labels: np.ndarray) -> None:
        cells = _strata_codes(groups, labels)
        self.members = [np.flatnonzero(cells == c) for c in np.unique(cells)]

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return np.concatenate([m[rng.integers(0, m.size, m.size)] for m in self.members])


def bootstrap_intervals(
    y_true: ArrayLike,
    scores: Union[ArrayLike, Sequence[ArrayLike]],
    groups: ArrayLike,
    metric_names: list[str],
    n_boot: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
    group_names: Optional[dict[int, str]] = None,
    threshold: float = 0.5,
    positive_is_disease: bool = True,
) -> dict[str, dict[str, float]]:
    """Percentile intervals ``{metric: {"point", "lo", "hi", "std", "n_valid"}}`` from a bootstrap
    stratified by group x label.

    ``scores`` is one 1-D array or a list of arrays (one per retrain seed, same samples): then each
    metric is the mean over seeds. ``point`` is that metric on the full sample; replicates where a
    metric is undefined (NaN) are ignored. Only the work the requested metrics need is done.
    """
    _check_arguments(metric_names, n_boot, alpha)
    evaluate = seed_averaged(y_true, scores, groups, list(metric_names), group_names, threshold, positive_is_disease)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedGroupMetricWarning)
        point = evaluate(None)
        point_msgs = sorted({str(w.message) for w in caught if _is_undefined(w)})
        caught.clear()
        [reps] = replicates([evaluate], n_boot, seed)
        n_rep_warn = sum(1 for w in caught if _is_undefined(w))
        others = [w for w in caught if not _is_undefined(w)]
    _reemit_once(others)
    if point_msgs or n_rep_warn:
        detail = "; ".join(point_msgs) if point_msgs else "only in some replicates"
        warnings.warn(
            f"bootstrap: undefined group metrics ignored as NaN ({detail}; "
            f"{n_rep_warn} undefined-metric events over {n_boot} replicates)",
            UndefinedGroupMetricWarning,
            stacklevel=2,
        )
    return {name: _interval(point[j], reps[:, j], alpha) for j, name in enumerate(evaluate.names)}


def _check_arguments(metric_names: list[str], n_boot: int, alpha: float) -> None:
    if not metric_names:
        raise ValueError("metric_names is empty")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


@dataclass
class _SeedAveraged:
    """The requested metrics of the split, or of a resample of it, averaged over the seeds' scores."""

    y: np.ndarray
    g: np.ndarray
    seed_scores: list[np.ndarray]
    names: list[str]
    group_names: Optional[dict[int, str]]
    threshold: float
    positive_is_disease: bool

    def __call__(self, idx: Optional[np.ndarray]) -> np.ndarray:
        """``idx`` None: the full split (and an unknown metric name is an error); else resampled rows."""
        vals = np.empty((len(self.seed_scores), len(self.names)))
        yy, gg = (self.y, self.g) if idx is None else (self.y[idx], self.g[idx])
        for k, s in enumerate(self.seed_scores):
            m = _compute(yy, s if idx is None else s[idx], gg, self.group_names, self.threshold,
                         self.positive_is_disease, needed=self.names, fast=True)
            if k == 0 and idx is None:
                unknown = [n for n in self.names if n not in m]
                if unknown:
                    raise ValueError(
                        f"unknown metric(s) {unknown} for the bootstrap; available: {sorted(m)}"
                    )
            vals[k] = [m[n] for n in self.names]
        return vals.mean(axis=0)


def seed_averaged(y_true, scores, groups, names: list[str], group_names: Optional[dict[int, str]],
                   threshold: float, positive_is_disease: bool) -> _SeedAveraged:
    """Validate every seed's scores against the labels and groups once, up front."""
    checked = [_validate(y_true, s, groups) for s in _as_seed_list(scores)]
    y, _, g = checked[0]
    return _SeedAveraged(y, g, [c[1] for c in checked], names, group_names, threshold, positive_is_disease)


def replicates(evaluators: Sequence[_SeedAveraged], n_boot: int, seed: int) -> list[np.ndarray]:
    """``(n_boot, n_metrics)`` per evaluator: the metrics of each group x label stratified resample,
    seeded. Every evaluator (e.g. two models on the same test split) scores the same resamples."""
    rng = np.random.default_rng(seed)
    strata = _Strata(evaluators[0].g, evaluators[0].y)
    reps = [np.empty((n_boot, len(e.names))) for e in evaluators]
    for b in range(n_boot):
        idx = strata.draw(rng)
        for e, r in zip(evaluators, reps):
            r[b] = e(idx)
    return reps


def _is_undefined(w: warnings.WarningMessage) -> bool:
    return issubclass(w.category, UndefinedGroupMetricWarning)


def _reemit_once(caught: list[warnings.WarningMessage]) -> None:
    """Re-emit (once each) anything unrelated that the recorder swallowed."""
    seen: set[tuple[type, str]] = set()
    for w in caught:
        if (w.category, str(w.message)) not in seen:
            seen.add((w.category, str(w.message)))
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _interval(point: float, replicates: np.ndarray, alpha: float) -> dict[str, float]:
    """Percentile interval and spread of one metric over its finite replicates."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size:
        lo, hi = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    else:
        lo = hi = std = float("nan")
    return {"point": float(point), "lo": float(lo), "hi": float(hi), "std": std, "n_valid": float(finite.size)}


def _as_seed_list(scores) -> list[np.ndarray]:
    """Normalise ``scores`` to a list of 1-D arrays (one per seed)."""
    if isinstance(scores, (list, tuple)) and len(scores) > 0 and np.ndim(scores[0]) == 1:
        arrs = [np.asarray(s, dtype=float) for s in scores]
    else:
        a = np.asarray(scores, dtype=float)
        if a.ndim == 2:
            arrs = list(a)
        elif a.ndim == 1:
            arrs = [a]
        else:
            raise ValueError(f"scores must be 1-D or a list of 1-D arrays, got shape {a.shape}")
    if len({a.size for a in arrs}) != 1:
        raise ValueError(f"every seed's scores must cover the same samples; sizes {[a.size for a in arrs]}")
    return arrs


def objective_bound(y_true: ArrayLike, scores: ArrayLike, groups: ArrayLike, objective: Objective, n_boot: int = 200,
                    seed: int = 0, quantile: float = 0.1, group_names: Optional[dict[int, str]] = None,
                    positive_is_disease: bool = True) -> float:
    """The pessimistic bootstrap bound of an objective: its ``quantile`` over group x label stratified
    resamples when maximised, its ``1 - quantile`` when minimised. ``positive_is_disease`` is the
    dataset's (an ``underdiag_gap`` term counts the FNR of the disease label).

    A search that ranks trials by this bound prefers a configuration that is good on most resamples of
    a small validation split over one that won a single draw. NaN when no replicate is defined.
    """
    evaluate = seed_averaged(y_true, scores, groups, list(objective.terms), group_names, 0.5, positive_is_disease)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedGroupMetricWarning)
        [reps] = replicates([evaluate], n_boot, seed)
    values = reps @ np.array(list(objective.terms.values()))
    finite = values[np.isfinite(values)]
    if not finite.size:
        return float("nan")
    return float(np.quantile(finite, quantile if objective.mode == "max" else 1.0 - quantile))
