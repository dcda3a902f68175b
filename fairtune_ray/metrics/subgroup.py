"""Dataset-level subgroup metrics (docs/design.md#objectives-and-metrics).

Every metric is computed once over the whole split from the collected scores, never averaged
over mini-batches: batch-averaged AUC is noisy and biased, which is the flaw this project fixes.

A group that lacks one of the two classes has an undefined AUC (and TPR/FNR or FPR). It is
reported as NaN with an :class:`UndefinedGroupMetricWarning`, never as 0 or 1, and cross-group
aggregates ignore it, so a tiny split cannot crash a trial or silently flatter/punish it.

This module is the entry point: per-group statistics live in :mod:`.per_group`, the cross-group
aggregates in :mod:`.across_groups`, the single-array metrics in :mod:`.primitives` and the names
in :mod:`.names`.
"""
from __future__ import annotations

import warnings
from typing import Iterable, Mapping, Optional

import numpy as np
from sklearn.metrics import roc_curve

from fairtune_ray.metrics.across_groups import aggregate, needed_fields
from fairtune_ray.metrics.names import GROUP_FIELDS, OVERALL_METRICS, UndefinedGroupMetricWarning, group_key
from fairtune_ray.metrics.per_group import group_stats
from fairtune_ray.metrics.primitives import binary_cross_entropy, expected_calibration_error, tpr_at_specificity

__all__ = [
    "UndefinedGroupMetricWarning",
    "GROUP_FIELDS",
    "OVERALL_METRICS",
    "compute_metrics",
    "roc_points",
    "expected_calibration_error",
    "binary_cross_entropy",
    "tpr_at_specificity",
    "group_key",
]

_OVERALL_FIELDS = ("auc", "acc", "bce", "ece")


def _validate(y_true, scores, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    g = np.asarray(groups).ravel()
    if not (y.size == s.size == g.size):
        raise ValueError(f"length mismatch: y_true={y.size}, scores={s.size}, groups={g.size}")
    if y.size == 0:
        raise ValueError("cannot compute metrics on an empty split")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf (did the model diverge?)")
    return y, s, g


def _name(g, group_names: Optional[Mapping[int, str]]) -> str:
    if group_names is not None:
        try:
            if g in group_names:
                return str(group_names[g])
        except TypeError:
            pass
        # tolerate str keys (e.g. after a JSON round trip)
        if str(g) in group_names:  # type: ignore[operator]
            return str(group_names[str(g)])  # type: ignore[index]
    return str(g.item() if hasattr(g, "item") else g)


def _compute(
    y: np.ndarray,
    s: np.ndarray,
    g: np.ndarray,
    group_names: Optional[Mapping[int, str]],
    threshold: float,
    positive_is_disease: bool,
    needed: Optional[Iterable[str]] = None,
    fast: bool = False,
) -> dict[str, float]:
    """Shared core of :func:`compute_metrics` and the bootstrap; ``needed`` limits the work."""
    fields, need_overall, overall_names = needed_fields(needed, positive_is_disease)
    pred = s >= threshold
    out: dict[str, float] = {}

    if need_overall:
        ofields = frozenset({n.removeprefix("overall_") for n in overall_names} & set(_OVERALL_FIELDS))
        st = group_stats(y, s, pred, ofields, fast, "the whole split")
        out.update({f"overall_{f}": st[f] for f in _OVERALL_FIELDS if f in st})

    per_group: dict[str, dict[str, float]] = {}
    for code in np.unique(g):
        name = _name(code, group_names)
        m = g == code
        per_group[name] = group_stats(y[m], s[m], pred[m], fields, fast, f"group '{name}'")
        out.update({group_key(name, f): v for f, v in per_group[name].items()})

    out.update(aggregate(per_group, fields, positive_is_disease, overall=out))
    return out


# --------------------------------------------------------------------------- public API


def compute_metrics(
    y_true,
    scores,
    groups,
    group_names: Optional[dict[int, str]] = None,
    threshold: float = 0.5,
    positive_is_disease: bool = True,
) -> dict[str, float]:
    """All per-group and cross-group metrics of one split, as a flat ``{name: float}`` dict.

    ``scores`` is P(label 1); a prediction is positive when ``score >= threshold``.
    ``positive_is_disease=False`` (e.g. CheXpert "No Finding", label 1 = healthy) makes the
    underdiagnosis rate the FPR instead of the FNR. Per-group keys are ``group/<name>/<field>``.
    """
    y, s, g = _validate(y_true, scores, groups)
    return _compute(y, s, g, group_names, threshold, positive_is_disease)


def roc_points(
    y_true,
    scores,
    groups,
    group_names: Optional[dict[int, str]] = None,
    include_overall: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-group ROC curves ``{name: (fpr, tpr)}`` for plots; single-class groups are skipped with a warning."""
    y, s, g = _validate(y_true, scores, groups)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    parts = [("overall", np.ones_like(y, dtype=bool))] if include_overall else []
    parts += [(_name(c, group_names), g == c) for c in np.unique(g)]
    for name, m in parts:
        ym = y[m]
        if ym.min() == ym.max():
            warnings.warn(f"group '{name}' has a single class: no ROC curve", UndefinedGroupMetricWarning, stacklevel=2)
            continue
        fpr, tpr, _ = roc_curve(ym, s[m])
        out[name] = (fpr, tpr)
    return out
