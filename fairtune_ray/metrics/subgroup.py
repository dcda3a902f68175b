"""Dataset-level subgroup metrics (DESIGN 2.2).

Every metric is computed once over the whole split from the collected scores, never averaged
over mini-batches: batch-averaged AUC is noisy and biased, which is the flaw this project fixes.

A group that lacks one of the two classes has an undefined AUC (and TPR/FNR or FPR). It is
reported as NaN with an :class:`UndefinedGroupMetricWarning`, never as 0 or 1, and cross-group
aggregates ignore it, so a tiny split cannot crash a trial or silently flatter/punish it.
"""
from __future__ import annotations

import warnings
from typing import Iterable, Mapping, Optional

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score, roc_curve

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

_EPS = 1e-7
ECE_BINS = 10
SPECIFICITY = 0.8

#: per-group fields, emitted as ``group/<name>/<field>``
GROUP_FIELDS: tuple[str, ...] = (
    "auc", "acc", "tpr", "fpr", "fnr", "ece", "bce", "tpr_at_spec80", "n", "prevalence", "pos_rate",
)

#: un-prefixed cross-group / whole-split metrics
OVERALL_METRICS: tuple[str, ...] = (
    "overall_auc", "overall_acc", "overall_bce", "overall_ece",
    "min_auc", "max_auc", "auc_gap", "min_acc", "acc_gap", "max_group_loss",
    "dp_diff", "eop_diff", "eodds_diff", "underdiag_gap", "n_groups_auc_undefined",
)

# which per-group fields each aggregate needs (lets the bootstrap skip work it does not need)
_AGG_NEEDS: dict[str, tuple[str, ...]] = {
    "min_auc": ("auc",), "max_auc": ("auc",), "auc_gap": ("auc",), "n_groups_auc_undefined": ("auc",),
    "min_acc": ("acc",), "acc_gap": ("acc",), "max_group_loss": ("bce",), "dp_diff": ("pos_rate",),
    "eop_diff": ("tpr",), "eodds_diff": ("tpr", "fpr"), "underdiag_gap": ("fnr", "fpr"),
}
_CONFUSION_FIELDS = frozenset({"acc", "tpr", "fpr", "fnr", "pos_rate"})


class UndefinedGroupMetricWarning(UserWarning):
    """A (group) metric is undefined on this split, e.g. AUC of a group with a single class."""


def group_key(name: str, field: str) -> str:
    """Flat key of a per-group metric; one place so selection/reporting agree on the layout."""
    return f"group/{name}/{field}"


# --------------------------------------------------------------------------- primitives


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


def _auc_rank(y: np.ndarray, s: np.ndarray) -> float:
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


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _spread(values: Iterable[float]) -> tuple[float, float, float]:
    """(min, max, max-min) over the finite values; NaNs if none (without numpy's all-NaN warning)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        nan = float("nan")
        return nan, nan, nan
    lo, hi = float(v.min()), float(v.max())
    return lo, hi, hi - lo


# --------------------------------------------------------------------------- per group


def _group_stats(
    y: np.ndarray, s: np.ndarray, pred: np.ndarray, fields: frozenset[str], fast: bool, label: str
) -> dict[str, float]:
    """Per-group (or whole-split) statistics for the requested fields."""
    out: dict[str, float] = {}
    n = y.size
    n_pos = int(y.sum())
    n_neg = n - n_pos
    out["n"] = float(n)
    out["prevalence"] = _ratio(n_pos, n)
    if fields & _CONFUSION_FIELDS:
        if fast:
            tp = int(np.count_nonzero(pred & (y == 1)))
            fp = int(np.count_nonzero(pred)) - tp
            fn = n_pos - tp
            tn = n_neg - fp
            acc = _ratio(tp + tn, n)
        else:
            tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred.astype(int), labels=[0, 1]).ravel())
            acc = float(accuracy_score(y, pred.astype(int)))
        out["acc"] = acc
        out["tpr"] = _ratio(tp, tp + fn)
        out["fnr"] = _ratio(fn, tp + fn)
        out["fpr"] = _ratio(fp, fp + tn)
        out["pos_rate"] = _ratio(tp + fp, n)
    single_class = n_pos == 0 or n_neg == 0
    if "auc" in fields:
        if single_class:
            out["auc"] = float("nan")
        else:
            out["auc"] = _auc_rank(y, s) if fast else float(roc_auc_score(y, s))
    if "tpr_at_spec80" in fields:
        out["tpr_at_spec80"] = float("nan") if single_class else tpr_at_specificity(y, s, fast=fast)
    if "ece" in fields:
        out["ece"] = expected_calibration_error(y, s)
    if "bce" in fields:
        out["bce"] = binary_cross_entropy(y, s)
    if single_class and ({"auc", "tpr_at_spec80"} & fields or fields & _CONFUSION_FIELDS):
        missing = "positives" if n_pos == 0 else "negatives"
        undefined = ["auc", "tpr_at_spec80"] + (["tpr", "fnr"] if n_pos == 0 else ["fpr"])
        warnings.warn(
            f"{label} has no {missing} (n={n}): {', '.join(undefined)} undefined, reported as NaN",
            UndefinedGroupMetricWarning,
            stacklevel=4,
        )
    return out


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


def _needed_fields(needed: Optional[Iterable[str]], positive_is_disease: bool) -> tuple[frozenset[str], bool, frozenset[str]]:
    """(per-group fields, need_overall, overall metric names) required by ``needed``."""
    if needed is None:
        return frozenset(GROUP_FIELDS), True, frozenset(OVERALL_METRICS)
    fields: set[str] = set()
    overall: set[str] = set()
    for name in needed:
        if name.startswith("group/"):
            fields.add(name.rsplit("/", 1)[-1])
        elif name in _AGG_NEEDS:
            need = _AGG_NEEDS[name]
            if name == "underdiag_gap":
                need = ("fnr",) if positive_is_disease else ("fpr",)
            fields.update(need)
        elif name.startswith("overall_"):
            overall.add(name)
    return frozenset(fields & set(GROUP_FIELDS)), bool(overall), frozenset(overall)


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
    fields, need_overall, overall_names = _needed_fields(needed, positive_is_disease)
    pred = s >= threshold
    out: dict[str, float] = {}

    if need_overall:
        ofields = frozenset(
            {n.removeprefix("overall_") for n in overall_names} & {"auc", "acc", "bce", "ece"}
        )
        st = _group_stats(y, s, pred, ofields, fast, "the whole split")
        for f in ("auc", "acc", "bce", "ece"):
            if f in st:
                out[f"overall_{f}"] = st[f]

    per_group: dict[str, dict[str, float]] = {}
    for code in np.unique(g):
        name = _name(code, group_names)
        m = g == code
        st = _group_stats(y[m], s[m], pred[m], fields, fast, f"group '{name}'")
        per_group[name] = st
        for f, v in st.items():
            out[group_key(name, f)] = v

    def col(f: str) -> list[float]:
        return [st[f] for st in per_group.values() if f in st]

    if "auc" in fields:
        aucs = col("auc")
        out["min_auc"], out["max_auc"], out["auc_gap"] = _spread(aucs)
        out["n_groups_auc_undefined"] = float(sum(1 for a in aucs if not np.isfinite(a)))
    if "acc" in fields:
        out["min_acc"], _, out["acc_gap"] = _spread(col("acc"))
    if "bce" in fields:
        out["max_group_loss"] = _spread(col("bce"))[1]
    if "pos_rate" in fields:
        out["dp_diff"] = _spread(col("pos_rate"))[2]
    if "tpr" in fields:
        out["eop_diff"] = _spread(col("tpr"))[2]
    if "tpr" in fields and "fpr" in fields:
        gaps = [x for x in (out["eop_diff"], _spread(col("fpr"))[2]) if np.isfinite(x)]
        out["eodds_diff"] = max(gaps) if gaps else float("nan")
    under = "fnr" if positive_is_disease else "fpr"
    if under in fields:
        out["underdiag_gap"] = _spread(col(under))[2]
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
