"""report.html from the jinja2 template in ``templates/``, and the summary shared with MLflow.

The template holds the markup and the stylesheet; this module only prepares values. Autoescaping
is on, so method labels, paths and config values are always shown as text, never as markup.
"""
from __future__ import annotations

import base64
from typing import Optional, Sequence

from jinja2 import Environment, PackageLoader, StrictUndefined

from fairtune_ray.reporting.figures import PAIRED_LABELS, ReportFigure
from fairtune_ray.reporting.run_data import RunData
from fairtune_ray.reporting.trials import Feasibility, best_trials, is_finite, trial_bits, trial_feasibility
from fairtune_ray.search.results import PAIRED_METRICS, TABLE_METRICS, ResultRow, results_table

TEMPLATE = "report.html.j2"
TOP_TRIALS = 12  # rows of the "top trials on validation" table


def format_number(v, fmt: str = "{:.3f}") -> str:
    return fmt.format(float(v)) if is_finite(v) else "n/a"


def format_count(v) -> str:
    """A whole number with thousands separators (``3,194``), "n/a" when undefined."""
    return f"{int(float(v)):,}" if is_finite(v) else "n/a"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("fairtune_ray.reporting", "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined)
    env.filters.update(num=format_number, thousands=format_count,
                       b64=lambda png: base64.b64encode(png).decode("ascii"))
    return env


_ENV = _environment()


def render_html(data: RunData, figs: Sequence[ReportFigure], mlflow_line: str) -> str:
    """The whole page: summary, results and top trials, then one section per figure."""
    feas = feasibility(data)
    return _ENV.get_template(TEMPLATE).render(
        name=data.info.get("name") or data.run_dir.name, objective=data.objective, trials_count=len(data.trials),
        summary=summary_text(data, markdown=False), run_folder=data.run_dir.resolve(), mlflow_line=mlflow_line,
        results=data.results, table_metrics=TABLE_METRICS, paired_metrics=PAIRED_METRICS, paired_labels=PAIRED_LABELS,
        paired_rows=[r for r in data.results if r.vs_selected],
        results_text=results_table(data.results) if data.results else "",
        top_trials=top_trial_rows(data, feas=feas), confirmation=data.confirmation, lr_grid=data.lr_grid,
        selected_id=data.selected_id, figures=figs, feasibility=feas,
        constraint_warning=constraint_sentence(feas, str) if feas is not None and _warn(feas) else "")


def feasibility(data: RunData) -> Optional[Feasibility]:
    """``search.constraint`` on the run's trials (None without one)."""
    return trial_feasibility(data.trials, data.config, data.confirmation, data.selected_id)


def top_trial_rows(data: RunData, top: int = TOP_TRIALS, feas: Optional[Feasibility] = None) -> list[dict]:
    """The best trials on validation, as the template's table shows them; with a constraint ranked as
    selection ranks them: feasible first, then by violation (``feas`` when already computed)."""
    feas = feas if feas is not None else feasibility(data)
    ranked = best_trials(data.trials, data.mode)
    if feas is not None and feas.violations:
        ranked = sorted(ranked, key=lambda t: _violation_rank(feas.violations.get(str(t["trial_id"]))))
    return [{"trial_id": t["trial_id"], "selected": str(t["trial_id"]) == data.selected_id,
             "bits": trial_bits(t, data.bit_keys) if data.bit_keys else "", "lr": t["config"].get("lr"),
             "objective": t["objective"], "overall_auc": t.get("metrics", {}).get("overall_auc"),
             "min_auc": t.get("metrics", {}).get("min_auc"), "epochs": t.get("epochs", ""),
             "status": t.get("status", ""), "feasible": _feasible_text(feas, t["trial_id"])}
            for t in ranked[:top]]


def _violation_rank(v: Optional[float]) -> tuple:
    return (2, 0.0) if v is None else (0, 0.0) if v == 0.0 else (1, v)


def _feasible_text(feas: Optional[Feasibility], trial_id) -> str:
    if feas is None or str(trial_id) not in feas.violations:
        return ""
    v = feas.violations[str(trial_id)]
    return "yes" if v == 0.0 else f"no ({format_number(v, '{:.3g}')})"


def _warn(feas: Feasibility) -> bool:
    return bool(feas.error) or (feas.n_pool > 0 and feas.n_feasible == 0)


def constraint_sentence(feas: Feasibility, code) -> str:
    """The constraint's outcome in one sentence; loud when no candidate met it."""
    bounds = code(feas.resolved) if feas.resolved and feas.resolved != feas.text else ""
    stated = code(feas.text) + (f" (on validation: {bounds})" if bounds else "")
    if feas.error:
        return f"WARNING: the constraint {stated} could not be evaluated: {feas.error}"
    if feas.n_feasible == 0:
        v = format_number(feas.selected_violation, "{:.3g}")
        return (f"WARNING: no candidate satisfies the constraint {stated} on validation; the selected "
                f"configuration is the least-violating one (violation {v}).")
    ok = "feasible" if feas.selected_violation == 0.0 else "not known to be feasible"
    return (f"Constraint {stated}: {feas.n_feasible} of {feas.n_pool} candidates feasible on validation; "
            f"the selection is {ok}.")


def summary_text(data: RunData, markdown: bool = True) -> str:
    """A few sentences on the outcome: the parent run's description and the report's opening."""
    code = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    bold = (lambda s: f"**{s}**") if markdown else (lambda s: s)
    trials = data.trials
    stopped = sum(1 for t in trials if t.get("status") == "stopped_early")
    failed = sum(1 for t in trials if t.get("status") == "failed")
    better = "higher" if data.mode == "max" else "lower"
    strategy = ((data.config or {}).get("search") or {}).get("selection", "best")
    parts = [f"{bold(str(len(trials)) + ' trials')} ({stopped} stopped early by ASHA, {failed} failed), searching for "
             f"the best validation {code(data.objective)} ({better} is better; selection: {strategy})."]
    feas = feasibility(data)
    if feas is not None:
        sentence = constraint_sentence(feas, code)
        parts.append(bold(sentence) if _warn(feas) else sentence)
    sel = data.selected_result
    if sel is not None:
        parts += _selection_sentences(sel, data.results, code)
    return " ".join(parts)


def _selection_sentences(sel: ResultRow, rows: Sequence[ResultRow], code) -> list[str]:
    """The selected configuration on test, then how much it beats (or trails) each other row."""
    out = [f"Selected {code(sel.mask_label)} ({code(sel.mask_text)}, lr {format_number(sel.lr, '{:.2e}')}, "
           f"{format_count(sel.trainable_params)} trainable parameters): test worst-group AUC "
           f"{sel.interval_text('min_auc')}, overall AUC {sel.interval_text('overall_auc')}, "
           f"AUC gap {sel.interval_text('auc_gap')}."]
    for r in rows:
        if r is sel or not is_finite(r.metric("min_auc")) or not is_finite(sel.metric("min_auc")):
            continue
        d = sel.metric("min_auc") - r.metric("min_auc")
        out.append(f"vs {r.method}: worst-group AUC {r.interval_text('min_auc')} "
                   f"({'+' if d >= 0 else ''}{d:.3f} for the selection).")
    return out
