"""The report's figures in report order, each as PNG bytes or a note saying why it is missing.

``plots`` draws; this module decides what goes into each figure and what it is called. One figure
that fails to draw becomes a note, so a broken figure never loses the rest of the report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from matplotlib.figure import Figure

from fairtune_ray.metrics import compute_metrics, parse_objective, roc_points
from fairtune_ray.reporting import plots
from fairtune_ray.reporting.pareto_plot import pareto_figure
from fairtune_ray.reporting.run_data import RunData
from fairtune_ray.reporting.trials import is_finite
from fairtune_ray.search.results import PAIRED_METRICS
from fairtune_ray.search.run_folder import SCORES_FILE
from fairtune_ray.search.selection import pareto_front

PAIRED_LABELS = {"min_auc": "worst-group AUC", "auc_gap": "AUC gap", "overall_auc": "test AUC"}
ROC_BASELINE_MASKS = ("full", "linear")  # the ROC panels compare the selection with these two baselines


@dataclass
class ReportFigure:
    key: str  # the section id in report.html and the figure file's name
    title: str
    caption: str
    png: Optional[bytes] = None
    note: Optional[str] = None  # why there is no figure (png is None)


@dataclass
class FigureSpec:
    key: str
    title: str
    caption: str
    draw: Callable[[], Figure]
    missing: Optional[str] = None  # the data it needs is absent: show this note instead of drawing


def build_figures(data: RunData, log: Callable = print) -> list[ReportFigure]:
    """Every figure of the report, in report order (the Fisher one only when statistics exist)."""
    specs = [paired_spec(data), pareto_spec(data), masks_spec(data), roc_spec(data), epochs_spec(data)]
    if data.fisher is not None:
        specs.append(fisher_spec(data))
    return [render_figure(s, log) for s in specs]


def render_figure(spec: FigureSpec, log: Callable = print) -> ReportFigure:
    fig = ReportFigure(spec.key, spec.title, spec.caption, note=spec.missing)
    if spec.missing is None:
        try:
            fig.png = plots.to_png(spec.draw())
        except Exception as err:  # noqa: BLE001 - one broken figure must not lose the report
            fig.note = f"figure failed: {type(err).__name__}: {err}"
            log(f"report: {spec.title}: {fig.note}")
    return fig


def _trials_with_metrics(data: RunData) -> list[dict]:
    return [t for t in data.trials if isinstance(t.get("metrics"), dict)]


def pareto_fronts(trials: list[dict]) -> tuple[list[str], list[str]]:
    """(front of overall vs worst-group AUC, trials not dominated over the per-group AUC vector)."""
    pts = [{"trial_id": str(t["trial_id"]), "metrics": {"group/overall/auc": t["metrics"].get("overall_auc"),
                                                          "group/worst/auc": t["metrics"].get("min_auc")}}
           for t in trials if is_finite(t["metrics"].get("overall_auc")) and is_finite(t["metrics"].get("min_auc"))]
    front_2d = pareto_front(pts) if pts else []
    try:
        front_groups = pareto_front([{**t, "trial_id": str(t["trial_id"])} for t in trials]) if trials else []
    except ValueError:
        front_groups = []
    return front_2d, front_groups


def pareto_spec(data: RunData) -> FigureSpec:
    trials = _trials_with_metrics(data)
    front_2d, front_groups = pareto_fronts(trials)
    return FigureSpec(
        "pareto", "Pareto plot: overall AUC against worst-group AUC",
        "Left: every trial at its best validation epoch; the dashed staircase is the Pareto front of (overall, "
        "worst-group) AUC, black rings mark trials not dominated over the per-group AUC vector, the star is the "
        "selected trial, square and diamond are the all-ones (full fine-tuning) and all-zeros (linear probe) trials. "
        "Right: the retrained configurations on test with 95% bootstrap intervals.",
        lambda: pareto_figure(trials, data.selected_id, data.results, front_2d, front_groups,
                                    data.baseline_ids, data.objective),
        None if (trials or data.results) else "no trials.json and no results.json")


def masks_spec(data: RunData) -> FigureSpec:
    trials = _trials_with_metrics(data)
    return FigureSpec(
        "masks", "Masks of the top trials",
        "Each row is one trial (best objective first, \u2605 = selected), each column one parameter group of the "
        "mask space; a trained group is coloured by the trial's validation objective, a frozen group is grey. "
        "A row label that names a PEFT method (lora, dora, ia3, loha, with rank, alpha and target kinds) marks a "
        "trial whose trained groups hold that method's adapters in their linears, base weights frozen.",
        lambda: plots.mask_heatmap_figure(trials, data.bit_keys, data.group_names, data.objective, data.mode,
                                          data.selected_id),
        None if (trials and data.bit_keys) else "the trials have no mask bits (method without a mask search)")


def paired_spec(data: RunData) -> FigureSpec:
    compared = [r for r in data.results if r.vs_selected]
    metrics = [(m, PAIRED_LABELS[m], parse_objective(m).mode == "max") for m in PAIRED_METRICS]
    return FigureSpec(
        "paired", "Paired differences: selected − each other row on test",
        "Each row's difference from the selected configuration, computed on the same bootstrap resamples of "
        "the test images (stratified by group × label); a verdict needs an interval that excludes 0.",
        lambda: plots.forest_figure(compared, metrics),
        None if compared else "no paired differences in results.json (written by searches from this version on)")


def roc_spec(data: RunData) -> FigureSpec:
    return FigureSpec(
        "roc", "Per-group ROC curves on test",
        "The selected configuration against full fine-tuning and the linear probe, one panel per group "
        "(seed-averaged test scores, AUC in the legend).",
        lambda: _roc_figure(data),
        None if data.scores else f"no {SCORES_FILE} in the run folder (written by searches from this version on)")


def epochs_spec(data: RunData) -> FigureSpec:
    epochs, rungs = asha_rungs(data.config)
    return FigureSpec(
        "epochs", "Validation objective per epoch",
        f"One line per trial (from {data.history_source or 'n/a'}); an X marks the last epoch of a trial that ASHA "
        "stopped early, dotted verticals are ASHA's rungs (where it compares trials).",
        lambda: plots.epochs_figure(data.histories, data.objective, data.mode, epochs, rungs, data.selected_id,
                                    data.baseline_ids),
        None if data.histories else "no per-epoch history: the MLflow store is not reachable and no Tune result "
                                    "files were found")


def fisher_spec(data: RunData) -> FigureSpec:
    return FigureSpec(
        "fisher", "Fisher disparity per layer",
        "Mean disparity max_g F_n - min_g F_n of the group-normalised Fisher information per layer "
        "(numel-weighted over its parameters): long bars are layers whose importance differs most between groups, "
        "the candidates the Fisher prior freezes.",
        lambda: plots.fisher_figure(data.fisher))


def asha_rungs(cfg: Optional[dict]) -> tuple[Optional[int], list[float]]:
    """(train.epochs, the epochs after which ASHA compares trials) from the run's config."""
    if not cfg:
        return None, []
    epochs = int(cfg.get("train", {}).get("epochs", 0)) or None
    asha = cfg.get("search", {}).get("asha", {})
    grace, rf = float(asha.get("grace_period", 1)), float(asha.get("reduction_factor", 2))
    rungs, r = [], grace
    while epochs and r < epochs and rf > 1:
        rungs.append(r)
        r *= rf
    return epochs, rungs


def roc_methods(data: RunData) -> list[str]:
    """The score sets to draw: the selected row's, then full fine-tuning and the linear probe
    (all of test_scores.npz when the results name none of them)."""
    sel = data.selected_result
    picked = ([sel] if sel else []) + [r for r in data.results if not r.is_selected and r.mask in ROC_BASELINE_MASKS]
    wanted = [r.method for r in picked if r.method in data.scores]
    return wanted or list(data.scores)


def _roc_figure(data: RunData) -> Figure:
    names = data.score_groups or None
    curves, aucs, counts = {}, {}, {}
    for m in roc_methods(data):
        d = data.scores[m]
        s = np.asarray(d["scores"], dtype=float).mean(axis=0)
        curves[m] = roc_points(d["labels"], s, d["groups"], names, include_overall=True)
        met = compute_metrics(d["labels"], s, d["groups"], names)  # AUCs only: the same whichever label is the disease
        aucs[m] = {"overall": met.get("overall_auc", float("nan")),
                   **{g: met.get(f"group/{g}/auc", float("nan")) for g in curves[m] if g != "overall"}}
        if not counts:
            counts = _group_counts(d["labels"], d["groups"], names)
    sel = data.selected_result
    return plots.roc_figure(curves, aucs, counts, selected=sel.method if sel else None)


def _group_counts(labels, groups, names: Optional[dict]) -> dict[str, tuple[int, int]]:
    """{group name (and "overall"): (test images, positives)} for the panel titles."""
    y, g = np.asarray(labels), np.asarray(groups)
    counts = {"overall": (len(y), int(y.sum()))}
    for code in np.unique(g):
        counts[(names or {}).get(int(code), str(code))] = (int((g == code).sum()), int(y[g == code].sum()))
    return counts
