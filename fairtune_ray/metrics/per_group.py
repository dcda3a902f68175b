"""The statistics of one demographic group (or of the whole split), computed only for the fields asked for.

A group without positives or without negatives has an undefined AUC, TPR@spec80 and TPR/FNR or
FPR: they are NaN, with an :class:`UndefinedGroupMetricWarning` that names the group.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

from fairtune_ray.metrics.names import UndefinedGroupMetricWarning
from fairtune_ray.metrics.primitives import (auc_rank, binary_cross_entropy, expected_calibration_error,
                                             tpr_at_specificity)

__all__ = ["CONFUSION_FIELDS", "group_stats"]

#: fields read off the confusion matrix at the decision threshold
CONFUSION_FIELDS = frozenset({"acc", "tpr", "fpr", "fnr", "pos_rate"})


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _confusion_rates(y: np.ndarray, pred: np.ndarray, n_pos: int, fast: bool) -> dict[str, float]:
    """Accuracy, TPR, FNR, FPR and positive-prediction rate at the threshold behind ``pred``."""
    n = y.size
    if fast:
        tp = int(np.count_nonzero(pred & (y == 1)))
        fp = int(np.count_nonzero(pred)) - tp
        fn = n_pos - tp
        tn = n - n_pos - fp
        acc = _ratio(tp + tn, n)
    else:
        tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred.astype(int), labels=[0, 1]).ravel())
        acc = float(accuracy_score(y, pred.astype(int)))
    return {"acc": acc, "tpr": _ratio(tp, tp + fn), "fnr": _ratio(fn, tp + fn), "fpr": _ratio(fp, fp + tn),
            "pos_rate": _ratio(tp + fp, n)}


def group_stats(
    y: np.ndarray, s: np.ndarray, pred: np.ndarray, fields: frozenset[str], fast: bool, label: str
) -> dict[str, float]:
    """Per-group (or whole-split) statistics for the requested fields; ``label`` names it in warnings."""
    n = y.size
    n_pos = int(y.sum())
    n_neg = n - n_pos
    out: dict[str, float] = {"n": float(n), "prevalence": _ratio(n_pos, n)}
    if fields & CONFUSION_FIELDS:
        out.update(_confusion_rates(y, pred, n_pos, fast))
    single_class = n_pos == 0 or n_neg == 0
    if "auc" in fields:
        if single_class:
            out["auc"] = float("nan")
        else:
            out["auc"] = auc_rank(y, s) if fast else float(roc_auc_score(y, s))
    if "tpr_at_spec80" in fields:
        out["tpr_at_spec80"] = float("nan") if single_class else tpr_at_specificity(y, s, fast=fast)
    if "ece" in fields:
        out["ece"] = expected_calibration_error(y, s)
    if "bce" in fields:
        out["bce"] = binary_cross_entropy(y, s)
    if single_class and ({"auc", "tpr_at_spec80"} & fields or fields & CONFUSION_FIELDS):
        missing = "positives" if n_pos == 0 else "negatives"
        undefined = ["auc", "tpr_at_spec80"] + (["tpr", "fnr"] if n_pos == 0 else ["fpr"])
        warnings.warn(
            f"{label} has no {missing} (n={n}): {', '.join(undefined)} undefined, reported as NaN",
            UndefinedGroupMetricWarning,
            stacklevel=4,  # the caller of compute_metrics (group_stats <- _compute <- compute_metrics)
        )
    return out
