"""Paired comparison of two models on the same test split (docs/design.md#objectives-and-metrics).

Both models are scored on the same bootstrap resamples (stratified by group x label, as for the
intervals), so the interval of the difference A - B carries only the sampling noise the two share
no part of; two overlapping marginal intervals can still hide a clear paired difference. The
verdict follows from the interval alone: it says "better" or "worse" for A only when the interval
excludes 0, in the direction the metric is better in.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from fairtune_ray.metrics.bootstrap import replicates, seed_averaged
from fairtune_ray.metrics.names import UndefinedGroupMetricWarning
from fairtune_ray.metrics.objectives import parse_objective

__all__ = ["PairedDifference", "paired_differences", "verdict"]

BETTER, WORSE, NO_DIFFERENCE, UNDEFINED = "better", "worse", "no detectable difference", "undefined"
Scores = Union[np.ndarray, Sequence[np.ndarray]]


@dataclass
class PairedDifference:
    """A - B on one metric: the point difference, its paired percentile interval, and the verdict for A."""

    diff: float
    lo: float
    hi: float
    verdict: str
    n_valid: int

    def text(self) -> str:
        if math.isnan(self.diff):
            return "n/a"
        return f"{self.diff:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}] {self.verdict}"


def verdict(lo: float, hi: float, higher_is_better: bool) -> str:
    """"better"/"worse" for A when the interval of A - B excludes 0, else "no detectable difference"."""
    if math.isnan(lo) or math.isnan(hi):
        return UNDEFINED
    if lo > 0:
        return BETTER if higher_is_better else WORSE
    if hi < 0:
        return WORSE if higher_is_better else BETTER
    return NO_DIFFERENCE


def paired_differences(y_true, scores_a: Scores, scores_b: Scores, groups, metric_names: list[str], n_boot: int = 500,
                       seed: int = 0, alpha: float = 0.05, group_names: Optional[dict[int, str]] = None,
                       threshold: float = 0.5, positive_is_disease: bool = True) -> dict[str, PairedDifference]:
    """``{metric: A - B}`` for two models' scores (each one array or one per retrain seed, averaged as in
    :func:`~fairtune_ray.metrics.bootstrap.bootstrap_intervals`) on the same labels and groups.

    ``metric_names`` must be named objectives (``min_auc``, ``auc_gap``, ...): their direction decides
    the verdict. With the same ``seed``, the resamples are those of ``bootstrap_intervals``.
    ``positive_is_disease`` is the dataset's (dataset.json ``disease_label == 1``).
    """
    higher = {m: parse_objective(m).mode == "max" for m in metric_names}
    a = seed_averaged(y_true, scores_a, groups, list(metric_names), group_names, threshold, positive_is_disease)
    b = seed_averaged(y_true, scores_b, groups, list(metric_names), group_names, threshold, positive_is_disease)
    with warnings.catch_warnings():  # the intervals of each model already report undefined groups
        warnings.simplefilter("ignore", UndefinedGroupMetricWarning)
        point = a(None) - b(None)
        reps_a, reps_b = replicates([a, b], n_boot, seed)
    out = {}
    for j, name in enumerate(a.names):
        d = reps_a[:, j] - reps_b[:, j]
        finite = d[np.isfinite(d)]
        lo, hi = (np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if finite.size
                  else (float("nan"), float("nan")))
        out[name] = PairedDifference(float(point[j]), float(lo), float(hi), verdict(float(lo), float(hi), higher[name]),
                                     int(finite.size))
    return out
