"""One typed row of the results table, with an explicit role.

The table, the report, MLflow and the JSON/CSV files all read the same ``ResultRow``; which row
is the selected configuration is its ``role``, never a substring of its display label.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fairtune_ray.common.files import atomic_write_text
from fairtune_ray.common.tables import format_table
from fairtune_ray.metrics.paired import PairedDifference
from fairtune_ray.models.naming import short_mask_label

TABLE_METRICS = ("overall_auc", "min_auc", "auc_gap", "eodds_diff", "es_auc")
PAIRED_METRICS = ("min_auc", "auc_gap", "overall_auc")  # selected - each other row, paired bootstrap
#: measured on the training split at the tested epoch, beside the test values: the fairness generalisation gap
TRAIN_METRICS = ("min_auc", "overall_auc")
PAIRED_PREFIX = "vs_selected/"
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"


class Role(str, Enum):
    """Why a row is in the table."""

    SELECTED = "selected"  # the configuration the search chose
    BASELINE = "baseline"  # a fixed mask (full fine-tuning, linear probe, BitFit, LoRA, ...)
    FISHER = "fisher"  # the best Fisher-only trial of a method: both search


@dataclass
class MetricInterval:
    """A test metric of the seed-averaged scores with its stratified-bootstrap 95% interval."""

    point: float
    lo: float
    hi: float
    seed_std: float = float("nan")

    def text(self) -> str:
        if self.point is None or math.isnan(self.point):
            return "n/a"
        return f"{self.point:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


@dataclass
class TestScores:
    """Test labels, group codes and one score vector per retrain seed (for ROC curves, paired tests)."""

    __test__ = False  # not a pytest test class

    labels: np.ndarray
    groups: np.ndarray
    scores: list[np.ndarray]


@dataclass
class ResultRow:
    method: str
    role: Role
    mask: str
    lr: float
    trainable_params: int
    seeds: int
    val_objective: float
    ewc_lambda: float = 0.0
    rank: int = 0
    factorise: str = ""
    peft: str = ""  # the adapters the mask placed (AdapterSpec.label), "" for none
    test: dict[str, MetricInterval] = field(default_factory=dict)
    train: dict[str, float] = field(default_factory=dict)  # seed-mean TRAIN_METRICS at the tested epoch
    vs_selected: dict[str, PairedDifference] = field(default_factory=dict)  # selected - this row (not on the selected)
    scores: Optional[TestScores] = field(default=None, repr=False, compare=False)

    @property
    def is_selected(self) -> bool:
        return self.role is Role.SELECTED

    @property
    def mask_label(self) -> str:
        return short_mask_label(self.mask)

    @property
    def mask_text(self) -> str:
        """The mask and, where adapters went into its groups, which ones (``attn_mlp_norm:0110 + lora r4 ...``)."""
        return f"{self.mask} + {self.peft}" if self.peft else self.mask

    def metric(self, name: str) -> float:
        iv = self.test.get(name)
        return float("nan") if iv is None else iv.point

    def interval_text(self, name: str) -> str:
        iv = self.test.get(name)
        return "n/a" if iv is None else iv.text()

    def to_flat(self) -> dict:
        """The JSON/CSV/MLflow form: ``test/<metric>``, ``test/<metric>_lo|_hi|_seed_std``."""
        out = {k: v for k, v in asdict(self).items() if k not in ("test", "train", "vs_selected", "scores")}
        out["role"] = self.role.value
        out.update({f"train/{m}": v for m, v in self.train.items()})
        for m, iv in self.test.items():
            out.update({f"test/{m}": iv.point, f"test/{m}_lo": iv.lo, f"test/{m}_hi": iv.hi,
                        f"test/{m}_seed_std": iv.seed_std})
        for m, d in self.vs_selected.items():
            key = PAIRED_PREFIX + m
            out.update({key: d.diff, f"{key}_lo": d.lo, f"{key}_hi": d.hi, f"{key}_verdict": d.verdict,
                        f"{key}_n_valid": d.n_valid})
        return out

    @classmethod
    def from_flat(cls, d: dict) -> "ResultRow":
        names = [k[len("test/"):] for k in d if k.startswith("test/") and not k.endswith(("_lo", "_hi", "_seed_std"))]
        test = {m: MetricInterval(float(d[f"test/{m}"]), float(d.get(f"test/{m}_lo", math.nan)),
                                  float(d.get(f"test/{m}_hi", math.nan)), float(d.get(f"test/{m}_seed_std", math.nan)))
                for m in names}
        paired = {k[len(PAIRED_PREFIX):]: PairedDifference(float(d[k]), float(d[f"{k}_lo"]), float(d[f"{k}_hi"]),
                                                          str(d[f"{k}_verdict"]), int(d.get(f"{k}_n_valid", 0)))
                  for k in d if k.startswith(PAIRED_PREFIX) and not k.endswith(("_lo", "_hi", "_verdict", "_n_valid"))}
        return cls(method=str(d["method"]), role=Role(d.get("role", Role.BASELINE.value)), mask=str(d["mask"]),
                   lr=float(d["lr"]), trainable_params=int(d["trainable_params"]), seeds=int(d.get("seeds", 1)),
                   val_objective=float(d.get("val_objective", math.nan)), ewc_lambda=float(d.get("ewc_lambda", 0.0)),
                   rank=int(d.get("rank", 0)), factorise=str(d.get("factorise", "") or ""),
                   peft=str(d.get("peft", "") or ""), test=test,
                   train={k[len("train/"):]: float(v) for k, v in d.items() if k.startswith("train/")}, vs_selected=paired)


def selected_row(rows: Sequence[ResultRow]) -> Optional[ResultRow]:
    return next((r for r in rows if r.is_selected), None)


RESULT_COLUMNS = [("method", "method"), ("mask", "mask"), ("lr", "lr"), ("trainable_params", "trainable"),
                  ("overall_auc", "test AUC [95% CI]"), ("train_min_auc", "train worst-group AUC"),
                  ("min_auc", "test worst-group AUC"),
                  ("auc_gap", "AUC gap"), ("eodds_diff", "eq-odds diff"), ("es_auc", "ES-AUC")]


def results_table(rows: Sequence[ResultRow]) -> str:
    """The terminal / MLflow-note table: one line per row, metrics with their intervals."""
    shown = [{"method": r.method, "mask": r.mask_text, "lr": f"{r.lr:.1e}", "trainable_params": r.trainable_params,
              "train_min_auc": r.train.get("min_auc", float("nan")),
              **{m: r.interval_text(m) for m in TABLE_METRICS}} for r in rows]
    return format_table(shown, RESULT_COLUMNS)


PAIRED_COLUMNS = [("comparison", "selected - row"), ("min_auc", "Δ worst-group AUC [95% CI]"),
                  ("auc_gap", "Δ AUC gap"), ("overall_auc", "Δ test AUC")]


def paired_table(rows: Sequence[ResultRow]) -> str:
    """Selected minus each other row on the same test resamples, with the verdict for the selected
    configuration ("better" / "worse" only where the paired interval excludes 0)."""
    shown = [{"comparison": f"vs {r.method}", **{m: r.vs_selected[m].text() if m in r.vs_selected else "n/a"
                                                 for m in PAIRED_METRICS}}
             for r in rows if r.vs_selected]
    return format_table(shown, PAIRED_COLUMNS) if shown else ""


def write_results(rows: Sequence[ResultRow], folder: Path) -> tuple[Path, Path]:
    """results.csv and results.json in ``folder`` (flat rows, no score arrays)."""
    flat = [r.to_flat() for r in rows]
    keys = list(dict.fromkeys(k for r in flat for k in r))
    csv_path, json_path = Path(folder) / RESULTS_CSV, Path(folder) / RESULTS_JSON
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(flat)
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(json_path, json.dumps(flat, indent=2, default=float))
    return csv_path, json_path


def read_results(folder: Path) -> list[ResultRow]:
    path = Path(folder) / RESULTS_JSON
    return [ResultRow.from_flat(d) for d in json.loads(path.read_text())] if path.is_file() else []
