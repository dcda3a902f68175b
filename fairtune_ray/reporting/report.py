"""The search report: one self-contained ``report.html`` in the run folder, same figures in MLflow.

Inputs are the files ``fairtune-ray search`` writes into ``runs/<name>/`` (results.json,
trials.json, test_scores.npz, config.yaml, fairtune_run.json) plus, when the MLflow store is
reachable, the per-epoch history of every trial's child run and any Fisher statistics logged to
the parent run (``run_data``). ``download_run`` rebuilds such a folder from a parent run id alone.

Sections: summary, results table with intervals, Pareto plot, mask heat map, per-group ROC
curves, validation objective per epoch (ASHA stops), Fisher disparity per layer (if present).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

from fairtune_ray.common.files import atomic_write_bytes, atomic_write_text
from fairtune_ray.reporting.figures import ReportFigure, build_figures
from fairtune_ray.reporting.html import render_html, summary_text
from fairtune_ray.reporting.mlflow_access import REPORT_ARTIFACT_DIR, download_run, store_reachable
from fairtune_ray.reporting.run_data import RunData, load_run
from fairtune_ray.search.results import results_table
from fairtune_ray.search.run_folder import MODEL_DIR
from fairtune_ray.tracking import MODEL_URI_TAG, model_sentence, resolve_tracking_uri, trials_sentence

REPORT_NAME = "report.html"
FIGURE_DIR = "figures"
_RUN_ID = re.compile(r"[0-9a-fA-F]{32}")


def write_report(run_dir, tracking_uri: Optional[str] = None, log: Callable = print) -> Path:
    """Write ``report.html`` (figures embedded) and ``figures/*.png`` into the run folder; log both to
    the parent MLflow run and refresh its description when the store is reachable."""
    data = load_run(Path(run_dir), tracking_uri, log=log)
    figs = build_figures(data, log=log)
    paths = _write_figures(data.run_dir / FIGURE_DIR, figs)
    parent = data.parent_run
    line = (f"report and figures logged to parent run {parent.run_id} (artifacts {REPORT_ARTIFACT_DIR}/) in "
            f"{parent.uri}" if parent is not None else data.mlflow_note)
    out = atomic_write_text(data.run_dir / REPORT_NAME, render_html(data, figs, line))
    if parent is not None:
        try:
            parent.log_report(out, paths, mlflow_description(data))
            log(f"report: logged {len(paths)} figures and {REPORT_NAME} to MLflow run {parent.run_id}")
        except Exception as err:  # noqa: BLE001 - the HTML report is written either way
            log(f"report: MLflow logging failed ({type(err).__name__}: {err}); the HTML report is still at {out}")
    return out


def _write_figures(fig_dir: Path, figs: list[ReportFigure]) -> list[Path]:
    """``NN_<key>.png`` for each drawn figure, numbered in report order."""
    fig_dir.mkdir(exist_ok=True)
    return [atomic_write_bytes(fig_dir / f"{i:02d}_{f.key}.png", f.png) for i, f in enumerate(figs, 1) if f.png]


def mlflow_description(data: RunData) -> str:
    """The parent run's note in the MLflow UI: what was searched, the summary, where the selected model
    and the report are, the results table."""
    cfg = data.config or {}
    searched = (f"Search `{data.info.get('name') or data.run_dir.name}`: `{(cfg.get('search') or {}).get('method', '?')}` "
                f"over the `{(cfg.get('mask') or {}).get('space', '?')}` mask space. ")
    note = (searched + summary_text(data) + "\n\n" + _model_line(data) + "\n\n" + _trials_line(data)
            + f"\n\nFull report: artifact `{REPORT_ARTIFACT_DIR}/{REPORT_NAME}`.")
    if data.results:
        note += "\n\n" + results_table(data.results)
    return note


def _model_line(data: RunData) -> str:
    """The selected model's MLflow logged model (linked into the UI) and its run-folder copy."""
    parent, folder = data.parent_run, data.run_dir / MODEL_DIR
    uri = parent.tag(MODEL_URI_TAG) if parent is not None else None
    return model_sentence(uri, parent.experiment_id if parent is not None else None,
                          str(folder.resolve()) if folder.is_dir() else None)


def _trials_line(data: RunData) -> str:
    parent = data.parent_run
    return trials_sentence(parent.experiment_id, parent.run_id, data.mode) if parent is not None else ""


def report_target(target: str, tracking_uri: Optional[str] = None, out: Optional[str] = None,
                  log: Callable = print) -> Path:
    """A run folder, or an MLflow parent run id whose artifacts are downloaded first."""
    p = Path(target)
    if p.is_dir():
        return write_report(p, tracking_uri, log=log)
    if not _RUN_ID.fullmatch(target):
        raise FileNotFoundError(f"'{target}' is neither a run folder nor an MLflow run id (32 hex characters)")
    uri = resolve_tracking_uri(tracking_uri)
    dest = Path(out) if out else Path("runs") / f"mlflow-{target[:8]}"
    download_run(target, uri, dest, log=log)
    return write_report(dest, uri, log=log)


__all__ = ["write_report", "report_target", "download_run", "load_run", "summary_text", "store_reachable",
           "REPORT_NAME", "FIGURE_DIR"]
