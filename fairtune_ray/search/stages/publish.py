"""Stage 7, publish: the MLflow parent run gets the selected configuration, every row's test
metrics, the result files, the table, a readable summary and the exported models (pyfunc, tag
``fairtune.model_uri`` for the selected one), and is marked finished."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from mlflow.tracking import MlflowClient

from fairtune_ray.search.exports import MODEL_URI_TAG, log_exports
from fairtune_ray.search.results import (
    PAIRED_PREFIX,
    RESULTS_CSV,
    RESULTS_JSON,
    paired_table,
    results_table,
    selected_row,
)
from fairtune_ray.search.run_folder import MODEL_DIR, SCORES_FILE, TRIALS_FILE
from fairtune_ray.search.stages.types import Prepared, Selection, Tested, TuneOutcome
from fairtune_ray.tracking import NOTE_TAG, model_sentence, objective_mode, trials_sentence, ui_hint
from fairtune_ray.tracking.mlflow_runs import log_metrics, metric_key


def publish(p: Prepared, tuned: TuneOutcome, selection: Selection, tested: Tested, log: Callable = print) -> str:
    """Returns the results table and the paired-difference table (markdown) it logged."""
    client = MlflowClient(p.tracking_uri)
    parent, spec = p.parent_run_id, selection.selected_spec
    client.log_param(parent, "selected.mask", spec.mask)
    client.log_param(parent, "selected.peft", spec.peft_method or "mask")  # the method whose adapters the mask placed
    client.log_param(parent, "selected.lr", f"{spec.lr:.3e}")
    client.log_param(parent, "selected.trial_id", selection.selected["trial_id"])
    for row in tested.rows:  # the row's flat form, as in results.json (log_metrics skips the text fields)
        metrics = {k: v for k, v in row.to_flat().items()
                   if k.startswith(("test/", "train/", PAIRED_PREFIX)) or k in ("trainable_params", "val_objective")}
        log_metrics(client, parent, {f"{_slug(row.method)}/{k}": v for k, v in metrics.items()}, step=0)
    for name in (RESULTS_CSV, RESULTS_JSON, TRIALS_FILE, SCORES_FILE):
        if (Path(p.run_dir) / name).is_file():
            client.log_artifact(parent, str(Path(p.run_dir) / name))
    table = results_table(tested.rows)
    paired = paired_table(tested.rows)
    client.log_text(parent, table, "results_table.md")
    if paired:
        client.log_text(parent, paired, "paired_differences.md")
        table += f"\n\nPaired differences on the same test resamples (95% intervals):\n\n{paired}"
    model_lines: list[str] = []  # printed last: the path of the saved model ends the output
    model_uri = log_exports(client, parent, Path(p.run_dir), tested.rows, log=model_lines.append)
    if model_uri:
        client.set_tag(parent, MODEL_URI_TAG, model_uri)
    folder, exp = Path(p.run_dir) / MODEL_DIR, client.get_run(parent).info.experiment_id
    where = model_sentence(model_uri, exp, str(folder.resolve()) if folder.is_dir() else None)
    trials = trials_sentence(exp, parent, objective_mode(p.cfg.train.objective))
    client.set_tag(parent, NOTE_TAG, _summary(p, tuned, selection, tested, f"{where}\n\n{trials}\n\n{table}"))
    client.set_terminated(parent, "FINISHED")
    log("\n" + table)
    log(f"\nresults: {Path(p.run_dir) / RESULTS_CSV}\nMLflow UI: {ui_hint(p.tracking_uri, parent)}")
    for line in model_lines or [f"model: not exported (search.export: {p.cfg.search.export})"]:
        log(line)
    return table


def _slug(method: str) -> str:
    return metric_key(method.lower().replace(" ", "_").replace("(", "").replace(")", ""))


def _summary(p: Prepared, tuned: TuneOutcome, selection: Selection, tested: Tested, rest: str) -> str:
    """The parent run's description until the report replaces it: what was searched, for which objective,
    the selected configuration on test (with its interval) and, in ``rest``, where the model is."""
    sel, spec, cfg = selected_row(tested.rows), selection.selected_spec, p.cfg
    n_stopped = sum(1 for t in tuned.trials if t["status"] == "stopped_early")
    return (f"**{len(tuned.trials)} trials** ({n_stopped} stopped early by ASHA) of `{cfg.search.method}` over the "
            f"`{cfg.mask.space}` mask space, objective: validation `{cfg.train.objective}`. Selected `{spec.mask}` "
            f"(lr {spec.lr:.2e}, {sel.trainable_params:,} trainable parameters): test worst-group AUC "
            f"{sel.interval_text('min_auc')}, overall AUC {sel.interval_text('overall_auc')}.\n\n{rest}")
