"""Per-group metric tables for the terminal (the ``finetune`` command's output)."""
from __future__ import annotations

from fairtune_ray.common.tables import fmt_value, format_table
from fairtune_ray.metrics import group_key

GROUP_FIELDS = ("n", "prevalence", "auc", "acc", "tpr", "fpr", "ece", "bce")
GROUP_COLUMNS = [("group", "group"), ("n", "n"), ("prevalence", "prev."), ("auc", "AUC"), ("acc", "acc"),
                 ("tpr", "TPR"), ("fpr", "FPR"), ("ece", "ECE"), ("bce", "BCE")]


def group_table(metrics: dict, group_names: dict[int, str]) -> str:
    """Per-group metrics of one split, an ALL row, and the fairness summary line."""
    rows = []
    for code in sorted(group_names):
        name = group_names[code]
        if f"{group_key(name, 'n')}" not in metrics:
            continue
        rows.append({"group": name, **{f: metrics.get(group_key(name, f), float("nan")) for f in GROUP_FIELDS}})
    rows.append({"group": "ALL", "n": sum(r["n"] for r in rows), "auc": metrics.get("overall_auc"),
                 "acc": metrics.get("overall_acc"), "ece": metrics.get("overall_ece"),
                 "bce": metrics.get("overall_bce")})
    for r in rows:
        r["n"] = int(r["n"]) if r.get("n") == r.get("n") else r.get("n")
    summary = (f"worst-group AUC {fmt_value(metrics.get('min_auc'))}, AUC gap {fmt_value(metrics.get('auc_gap'))}, "
               f"eq-odds diff {fmt_value(metrics.get('eodds_diff'))}, ES-AUC {fmt_value(metrics.get('es_auc'))}, "
               f"dem. parity diff {fmt_value(metrics.get('dp_diff'))}")
    return format_table(rows, GROUP_COLUMNS) + "\n" + summary
