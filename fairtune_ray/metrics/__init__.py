"""Dataset-level subgroup metrics, search objectives and stratified bootstrap intervals, paired comparisons (docs/design.md#objectives-and-metrics)."""
from fairtune_ray.metrics.bootstrap import bootstrap_intervals, objective_bound, stratified_indices
from fairtune_ray.metrics.names import (
    FAIRLEARN_ALIASES, FAIRLEARN_EQUIVALENTS, GROUP_FIELDS, OVERALL_METRICS, UndefinedGroupMetricWarning, canonical_metric,
    group_key,
)
from fairtune_ray.metrics.objectives import OBJECTIVES, Objective, list_objectives, parse_objective
from fairtune_ray.metrics.paired import PairedDifference, paired_differences
from fairtune_ray.metrics.primitives import binary_cross_entropy, expected_calibration_error, tpr_at_specificity
from fairtune_ray.metrics.subgroup import compute_metrics, roc_points

__all__ = [
    # metrics of one split
    "compute_metrics",
    "roc_points",
    "binary_cross_entropy",
    "expected_calibration_error",
    "tpr_at_specificity",
    # names and warnings
    "GROUP_FIELDS",
    "OVERALL_METRICS",
    "UndefinedGroupMetricWarning",
    "group_key",
    # fairlearn's vocabulary
    "FAIRLEARN_ALIASES",
    "FAIRLEARN_EQUIVALENTS",
    "canonical_metric",
    # objectives
    "OBJECTIVES",
    "Objective",
    "list_objectives",
    "parse_objective",
    # intervals
    "bootstrap_intervals",
    "objective_bound",
    "stratified_indices",
    # paired comparisons
    "PairedDifference",
    "paired_differences",
]
