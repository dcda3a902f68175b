"""The metric vocabulary every layer shares: per-group fields, cross-group metric names, fairlearn's names
for them, the flat key layout and the warning for an undefined group metric."""
from __future__ import annotations

__all__ = ["FAIRLEARN_ALIASES", "FAIRLEARN_EQUIVALENTS", "GROUP_FIELDS", "OVERALL_METRICS",
           "UndefinedGroupMetricWarning", "canonical_metric", "group_key"]

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


#: fairlearn's name (a function of ``fairlearn.metrics``, or a ``MetricFrame`` expression) for each of our
#: cross-group metrics; tests/unit/metrics/test_fairlearn_agreement.py checks each against fairlearn.
#: ``mf(f)`` is ``MetricFrame(metrics=f, y_true=y, y_pred=scores or predictions, sensitive_features=g)``.
FAIRLEARN_EQUIVALENTS: dict[str, str] = {
    "overall_auc": "mf(roc_auc_score).overall",
    "overall_acc": "mf(accuracy_score).overall",
    "overall_bce": "mf(log_loss).overall",
    "min_auc": "roc_auc_score_group_min",
    "max_auc": "mf(roc_auc_score).group_max()",
    "auc_gap": "mf(roc_auc_score).difference()",
    "min_acc": "accuracy_score_group_min",
    "acc_gap": "accuracy_score_difference",
    "max_group_loss": "log_loss_group_max",
    "dp_diff": "demographic_parity_difference",
    "eop_diff": "equal_opportunity_difference",
    "eodds_diff": "equalized_odds_difference",
    "underdiag_gap": "false_negative_rate_difference (false_positive_rate_difference when label 1 is healthy)",
}

#: names from fairlearn (and scikit-learn, for the whole split) accepted wherever a metric is named (objectives,
#: ``search.constraint`` bounds) and read as ours. underdiag_gap has none: fairlearn's FNR difference is it only
#: when label 1 is the disease.
FAIRLEARN_ALIASES: dict[str, str] = {
    "roc_auc_score_group_min": "min_auc", "worst_group_auc": "min_auc",
    "accuracy_score_group_min": "min_acc", "accuracy_score_difference": "acc_gap",
    "log_loss_group_max": "max_group_loss",
    "demographic_parity_difference": "dp_diff", "selection_rate_difference": "dp_diff",
    "equal_opportunity_difference": "eop_diff", "true_positive_rate_difference": "eop_diff",
    "equalized_odds_difference": "eodds_diff",
    "roc_auc_score": "overall_auc", "accuracy_score": "overall_acc", "log_loss": "overall_bce",
}


def canonical_metric(name: str) -> str:
    """Our name for ``name``: itself, or the metric a fairlearn alias stands for."""
    return FAIRLEARN_ALIASES.get(name, name)


class UndefinedGroupMetricWarning(UserWarning):
    """A (group) metric is undefined on this split, e.g. AUC of a group with a single class."""


def group_key(name: str, field: str) -> str:
    """Flat key of a per-group metric; one place so selection/reporting agree on the layout."""
    return f"group/{name}/{field}"
