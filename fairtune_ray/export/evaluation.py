"""Metrics of an exported model on a dataset: every per-group and cross-group metric, with 95 %
stratified-bootstrap intervals for the ones the tables show (docs/design.md#objectives-and-metrics),
as a dict for JSON, as terminal tables, and as an MLflow run."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from mlflow.tracking import MlflowClient

from fairtune_ray.common.tables import fmt_value, format_table
from fairtune_ray.metrics import bootstrap_intervals, compute_metrics, group_key
from fairtune_ray.tracking.mlflow_runs import ROLE_TAG, log_metrics, start_parent_run

GROUP_INTERVAL_FIELDS = ("auc", "acc", "tpr", "fpr")
CROSS_METRICS = ("overall_auc", "overall_acc", "min_auc", "auc_gap", "es_auc", "eodds_diff", "eop_diff", "dp_diff",
                 "underdiag_gap", "overall_ece")
GROUP_COLUMNS = [("group", "group"), ("n", "n"), ("prevalence", "prev."), ("auc", "AUC [95% CI]"),
                 ("acc", "acc [95% CI]"), ("tpr", "TPR [95% CI]"), ("fpr", "FPR [95% CI]"), ("ece", "ECE")]


def evaluate_scores(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, group_names: dict[int, str], *,
                    threshold: float = 0.5, n_boot: int = 1000, seed: int = 0, positive_is_disease: bool = True) -> dict:
    """{"metrics": every metric at the point, "intervals": {metric: point, lo, hi, n_valid}}.

    ``positive_is_disease`` is the evaluated dataset's (dataset.json ``disease_label == 1``): its labels
    are the ones scored, so it decides whether underdiagnosis is the FNR or the FPR of label 1."""
    point = compute_metrics(labels, scores, groups, group_names, threshold=threshold,
                            positive_is_disease=positive_is_disease)
    present = [group_names.get(int(c), str(c)) for c in np.unique(groups)]
    names = [group_key(g, f) for g in present for f in GROUP_INTERVAL_FIELDS] + list(CROSS_METRICS)
    intervals = bootstrap_intervals(labels, scores, groups, names, n_boot=n_boot, seed=seed,
                                    group_names=group_names, threshold=threshold,
                                    positive_is_disease=positive_is_disease)
    return {"metrics": point, "groups": present, "positive_is_disease": bool(positive_is_disease),
            "intervals": {k: {f: float(v[f]) for f in ("point", "lo", "hi", "n_valid")} for k, v in intervals.items()}}


def _with_interval(result: dict, key: str) -> str:
    iv = result["intervals"].get(key)
    if iv is None:
        return fmt_value(float(result["metrics"].get(key, math.nan)))
    if math.isnan(iv["point"]):
        return "n/a"
    return f"{iv['point']:.3f} [{iv['lo']:.3f}, {iv['hi']:.3f}]"


def group_table(result: dict) -> str:
    """One line per group: size, prevalence, metrics with their intervals."""
    rows = []
    for g in result["groups"]:
        m = result["metrics"]
        rows.append({"group": g, "n": int(m[group_key(g, "n")]), "prevalence": m[group_key(g, "prevalence")],
                     "ece": m[group_key(g, "ece")],
                     **{f: _with_interval(result, group_key(g, f)) for f in GROUP_INTERVAL_FIELDS}})
    return format_table(rows, GROUP_COLUMNS)


def cross_group_table(result: dict) -> str:
    rows = [{"metric": k, "value": _with_interval(result, k)} for k in CROSS_METRICS]
    return format_table(rows, [("metric", "metric"), ("value", "value [95% CI]")])


def flat_metrics(result: dict) -> dict[str, float]:
    """Every point metric plus ``<metric>_lo`` / ``_hi`` for those with an interval (MLflow keys)."""
    out = {k: float(v) for k, v in result["metrics"].items()}
    for k, iv in result["intervals"].items():
        out[f"{k}_lo"], out[f"{k}_hi"] = iv["lo"], iv["hi"]
    return out


def log_evaluation(tracking_uri: str, experiment: str, run_name: str, params: dict, result: dict,
                   json_path: Optional[str] = None) -> str:
    """A new MLflow run with the evaluation's parameters, metrics and JSON; returns its id."""
    run_id = start_parent_run(tracking_uri, experiment, run_name, params, tags={ROLE_TAG: "evaluation"})
    client = MlflowClient(tracking_uri)
    log_metrics(client, run_id, flat_metrics(result), step=0)
    if json_path:
        client.log_artifact(run_id, json_path)
    client.set_terminated(run_id, "FINISHED")
    return run_id
