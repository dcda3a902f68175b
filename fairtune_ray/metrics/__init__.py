"""Dataset-level subgroup metrics, search objectives and stratified bootstrap intervals (DESIGN 2.2)."""
from fairtune_ray.metrics.bootstrap import bootstrap_intervals, stratified_indices
from fairtune_ray.metrics.objectives import OBJECTIVES, Objective, list_objectives, parse_objective
from fairtune_ray.metrics.subgroup import (
    GROUP_FIELDS,
    OVERALL_METRICS,
    UndefinedGroupMetricWarning,
    binary_cross_entropy,
    compute_metrics,
    expected_calibration_error,
    group_key,
    roc_points,
    tpr_at_specificity,
)

__all__ = [
    "GROUP_FIELDS",
    "OBJECTIVES",
    "OVERALL_METRICS",
    "Objective",
    "UndefinedGroupMetricWarning",
    "binary_cross_entropy",
    "bootstrap_intervals",
    "compute_metrics",
    "expected_calibration_error",
    "group_key",
    "list_objectives",
    "parse_objective",
    "roc_points",
    "stratified_indices",
    "tpr_at_specificity",
]
