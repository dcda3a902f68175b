"""Metrics of one set of labels and scores: calibration, loss, AUC and TPR at a fixed specificity.

The ``fast`` numpy versions of ROC and AUC give the same numbers as scikit-learn without its
per-call overhead; the bootstrap calls them thousands of times.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

__all__ = ["ECE_BINS", "SPECIFICITY", "auc_rank", "binary_cross_entropy", "expected_calibration_error",
           "tpr_at_specificity"]

_EPS = 1e-7
ECE_BINS = 10
SPECIFICITY = 0.8


def expected_calibration_error(y_true: np.ndarray, scores: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of the positive-class probability over equal-width bins on [0, 1].

    Bin b holds scores in [b/n, (b+1)/n); a score of exactly 1 goes into the last bin.
    ECE = sum_b (n_b / n) * |mean(y in b) - mean(score in b)|.
    """
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(scores, dtype=float)
    if y.size == 0:
        return float("nan")
    idx = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    idx = np.maximum(idx, 0)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    sum_s = np.bincount(idx, weights=s, minlength=n_bins)
    # |mean_y - mean_s| * n_b / n == |sum_y - sum_s| / n, which avoids 0/0 on empty bins
    return float(np.abs(sum_y - sum_s).sum() / y.size)


def binary_cross_entropy(y_true: np.ndarray, scores: np.ndarray, eps: float = _EPS) -> float:
    """Mean BCE with scores clipped to [eps, 1-eps] so a confident mistake is finite."""
    y = np.asarray(y_true, dtype=float)
    if y.size == 0:
        return float("nan")
    s = np.clip(np.asarray(scores, dtype=float), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(s) + (1.0 - y) * np.log1p(-s)))


def _roc_fast(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC vertices (one per distinct score, plus the origin) like roc_curve(drop_intermediate=False)."""
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[np.flatnonzero(ss[1:] != ss[:-1]), ys.size - 1]
    tps = np.cumsum(ys)[last]
    fps = (last + 1) - tps
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def tpr_at_specificity(
    y_true: np.ndarray, scores: np.ndarray, specificity: float = SPECIFICITY, fast: bool = False
) -> float:
    """TPR at the given specificity, linearly interpolated on the ROC curve (NaN if undefined).

    Where the curve is vertical at exactly that FPR, the highest TPR reachable there is used.
    ``fast`` swaps sklearn's roc_curve for an equivalent numpy version (bootstrap inner loop).
    """
    y = np.asarray(y_true)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    if fast:
        fpr, tpr = _roc_fast(y, np.asarray(scores, dtype=float))
    else:
        fpr, tpr, _ = roc_curve(y, scores)
    x = 1.0 - specificity
    # fpr is non-decreasing: j is the top of any vertical segment at fpr <= x, j+1 the first
    # vertex past x (bottom of its vertical segment), so a straight chord joins the right points
    # (tolerance: 1 - 0.8 is 0.19999999999999996, and FPR = 1/5 must count as exactly 0.2)
    j = int(np.searchsorted(fpr, x + 1e-12, side="right")) - 1
    if abs(fpr[j] - x) <= 1e-12 or j + 1 >= fpr.size:
        return float(tpr[j])
    w = (x - fpr[j]) / (fpr[j + 1] - fpr[j])
    return float(tpr[j] + w * (tpr[j + 1] - tpr[j]))


def auc_rank(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; equals roc_auc_score, without its overhead."""
    n = y.size
    n1 = int(y.sum())
    n0 = n - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    bounds = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1], True])
    avg = (bounds[:-1] + 1 + bounds[1:]) / 2.0
    ranks = np.empty(n, dtype=float)
    ranks[order] = np.repeat(avg, np.diff(bounds))
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))
