"""Plain-text tables for the terminal and CSV/JSON files for the run folder."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

from fairtune_ray.metrics import group_key


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """Render rows as an aligned markdown table; ``columns`` are (key, header) pairs."""
    cells = [[h for _, h in columns]] + [[_fmt(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def with_interval(row: dict, metric: str) -> str:
    p, lo, hi = row.get(f"test/{metric}"), row.get(f"test/{metric}_lo"), row.get(f"test/{metric}_hi")
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.3f} [{lo:.3f}, {hi:.3f}]"


RESULT_COLUMNS = [("method", "method"), ("mask_short", "mask"), ("trainable_params", "trainable"),
                  ("overall_auc_ci", "test AUC [95% CI]"), ("min_auc_ci", "worst-group AUC"),
                  ("auc_gap_ci", "AUC gap"), ("eodds_diff_ci", "eq-odds diff")]


def results_table(rows: Sequence[dict]) -> str:
    shown = []
    for r in rows:
        mask = r["mask"]
        short = mask if ":" not in mask else f"{mask.split(':')[0]}:{mask.split(':')[1]}"
        shown.append({**r, "mask_short": short,
                      **{f"{m}_ci": with_interval(r, m) for m in ("overall_auc", "min_auc", "auc_gap", "eodds_diff")}})
    return format_table(shown, RESULT_COLUMNS)


def group_table(metrics: dict, group_names: dict[int, str]) -> str:
    """Per-group metrics of one split (the `finetune` command's output)."""
    rows = []
    for code in sorted(group_names):
        name = group_names[code]
        if f"{group_key(name, 'n')}" not in metrics:
            continue
        rows.append({"group": name, **{f: metrics.get(group_key(name, f), float("nan"))
                                        for f in ("n", "prevalence", "auc", "acc", "tpr", "fpr", "ece", "bce")}})
    rows.append({"group": "ALL", "n": sum(r["n"] for r in rows), "auc": metrics.get("overall_auc"),
                 "acc": metrics.get("overall_acc"), "ece": metrics.get("overall_ece"), "bce": metrics.get("overall_bce")})
    for r in rows:
        r["n"] = int(r["n"]) if r.get("n") == r.get("n") else r.get("n")
    cols = [("group", "group"), ("n", "n"), ("prevalence", "prev."), ("auc", "AUC"), ("acc", "acc"), ("tpr", "TPR"),
            ("fpr", "FPR"), ("ece", "ECE"), ("bce", "BCE")]
    summary = (f"worst-group AUC {_fmt(metrics.get('min_auc'))}, AUC gap {_fmt(metrics.get('auc_gap'))}, "
               f"eq-odds diff {_fmt(metrics.get('eodds_diff'))}, dem. parity diff {_fmt(metrics.get('dp_diff'))}")
    return format_table(rows, cols) + "\n" + summary


def write_results(rows: Sequence[dict], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    csv_path, json_path = folder / "results.csv", folder / "results.json"
    keys = list(dict.fromkeys(k for r in clean for k in r))
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(clean)
    json_path.write_text(json.dumps(clean, indent=2, default=float))
    return csv_path, json_path
