"""Cross-group aggregates (worst-group AUC, gaps, fairness differences) from per-group statistics.

Most aggregates are one reduction of one per-group field over the groups, listed in
``AGGREGATES``; an aggregate ignores groups where its field is undefined (NaN). The ones that
combine fields (equalised odds, underdiagnosis) or need the whole split's AUC (ES-AUC) follow the table.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional

import numpy as np

from fairtune_ray.metrics.names import GROUP_FIELDS, OVERALL_METRICS

__all__ = ["AGGREGATES", "AGG_NEEDS", "AGG_NEEDS_OVERALL", "aggregate", "equity_scaled_auc", "needed_fields", "spread"]


def spread(values: Iterable[float]) -> tuple[float, float, float]:
    """(min, max, max-min) over the finite values; NaNs if none (without numpy's all-NaN warning)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        nan = float("nan")
        return nan, nan, nan
    lo, hi = float(v.min()), float(v.max())
    return lo, hi, hi - lo


def _lowest(values: list[float]) -> float:
    return spread(values)[0]


def _highest(values: list[float]) -> float:
    return spread(values)[1]


def _gap(values: list[float]) -> float:
    return spread(values)[2]


def equity_scaled_auc(overall_auc: float, group_aucs: Iterable[float]) -> float:
    """ES-AUC of the Harvard-GF / FairVision benchmarks, ``AUC / (1 + sum_g |AUC_g - AUC|)``, over the groups
    whose AUC is defined: one number that falls with accuracy and with any group's distance from it.
    NaN when the overall AUC or every group AUC is undefined (never the flattering overall AUC alone)."""
    defined = [a for a in group_aucs if np.isfinite(a)]
    if not defined or not np.isfinite(overall_auc):
        return float("nan")
    return float(overall_auc / (1.0 + sum(abs(a - overall_auc) for a in defined)))


def _n_undefined(values: list[float]) -> float:
    return float(sum(1 for a in values if not np.isfinite(a)))


#: (aggregate, per-group field, reduction over the groups), in output order
AGGREGATES: tuple[tuple[str, str, Callable[[list[float]], float]], ...] = (
    ("min_auc", "auc", _lowest), ("max_auc", "auc", _highest), ("auc_gap", "auc", _gap),
    ("n_groups_auc_undefined", "auc", _n_undefined),
    ("min_acc", "acc", _lowest), ("acc_gap", "acc", _gap),
    ("max_group_loss", "bce", _highest),
    ("dp_diff", "pos_rate", _gap),
    ("eop_diff", "tpr", _gap),
)

#: which per-group fields each aggregate needs (lets the bootstrap skip work it does not need);
#: underdiag_gap needs fnr when the positive label is the disease, fpr otherwise
AGG_NEEDS: dict[str, tuple[str, ...]] = {
    **{name: (field,) for name, field, _ in AGGREGATES},
    "eodds_diff": ("tpr", "fpr"), "underdiag_gap": ("fnr", "fpr"), "es_auc": ("auc",),
}
#: whole-split metrics an aggregate needs besides its per-group fields
AGG_NEEDS_OVERALL: dict[str, tuple[str, ...]] = {"es_auc": ("overall_auc",)}


def aggregate(per_group: Mapping[str, Mapping[str, float]], fields: frozenset[str],
              positive_is_disease: bool, overall: Optional[Mapping[str, float]] = None) -> dict[str, float]:
    """Every aggregate whose per-group fields (and, for ES-AUC, ``overall["overall_auc"]``) were computed."""

    def column(field: str) -> list[float]:
        return [stats[field] for stats in per_group.values() if field in stats]

    out = {name: reduce(column(field)) for name, field, reduce in AGGREGATES if field in fields}
    if "tpr" in fields and "fpr" in fields:
        gaps = [x for x in (out["eop_diff"], _gap(column("fpr"))) if np.isfinite(x)]
        out["eodds_diff"] = max(gaps) if gaps else float("nan")
    under = "fnr" if positive_is_disease else "fpr"
    if under in fields:
        out["underdiag_gap"] = _gap(column(under))
    if "auc" in fields and overall is not None and "overall_auc" in overall:
        out["es_auc"] = equity_scaled_auc(overall["overall_auc"], column("auc"))
    return out


def needed_fields(needed: Optional[Iterable[str]],
                  positive_is_disease: bool) -> tuple[frozenset[str], bool, frozenset[str]]:
    """(per-group fields, need_overall, overall metric names) required by ``needed``."""
    if needed is None:
        return frozenset(GROUP_FIELDS), True, frozenset(OVERALL_METRICS)
    fields: set[str] = set()
    overall: set[str] = set()
    for name in needed:
        if name.startswith("group/"):
            fields.add(name.rsplit("/", 1)[-1])
        elif name in AGG_NEEDS:
            need = AGG_NEEDS[name]
            if name == "underdiag_gap":
                need = ("fnr",) if positive_is_disease else ("fpr",)
            fields.update(need)
            overall.update(AGG_NEEDS_OVERALL.get(name, ()))
        elif name.startswith("overall_"):
            overall.add(name)
    return frozenset(fields & set(GROUP_FIELDS)), bool(overall), frozenset(overall)
