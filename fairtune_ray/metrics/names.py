"""The metric vocabulary every layer shares: per-group fields, cross-group metric names, the flat key
layout and the warning for an undefined group metric."""
from __future__ import annotations

__all__ = ["GROUP_FIELDS", "OVERALL_METRICS", "UndefinedGroupMetricWarning", "group_key"]

#: per-group fields, emitted as ``group/<name>/<field>``
GROUP_FIELDS: tuple[str, ...] = (
    "auc", "acc", "tpr", "fpr", "fnr", "ece", "bce", "tpr_at_spec80", "n", "prevalence", "pos_rate",
)

#: un-prefixed cross-group / whole-split metrics
OVERALL_METRICS: tuple[str, ...] = (
    "overall_auc", "overall_acc", "overall_bce", "overall_ece",
    "min_auc", "max_auc", "auc_gap", "es_auc", "min_acc", "acc_gap", "max_group_loss",
    "dp_diff", "eop_diff", "eodds_diff", "underdiag_gap", "n_groups_auc_undefined",
)


class UndefinedGroupMetricWarning(UserWarning):
    """A (group) metric is undefined on this split, e.g. AUC of a group with a single class."""


def group_key(name: str, field: str) -> str:
    """Flat key of a per-group metric; one place so selection/reporting agree on the layout."""
    return f"group/{name}/{field}"
