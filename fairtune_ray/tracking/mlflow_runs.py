"""MLflow runs for a search, written with ``MlflowClient`` (no global active-run state).

Ray's built-in MLflow callback does not nest runs, so each trial opens its own child run from
inside the trial, tagged with the parent run id (``mlflow.parentRunId``) and its Ray trial id. A
resumed trial finds its existing child run by that tag instead of creating a duplicate. The driver
marks each child's final status (completed, stopped early by ASHA, failed) when Tune says so.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Optional

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from fairtune_ray.metrics.objectives import parse_objective
from fairtune_ray.tracking.descriptions import (
    EXPERIMENT_KIND_TAG, NOTE_TAG, PARENT_TAG, TRAINING_KIND, child_description, trials_route, trials_sentence, ui_base,
)

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
TRIAL_TAG = "ray_trial_id"
ROLE_TAG = "fairtune.role"
OBJECTIVE_TAG = "fairtune.objective"  # on the parent run: the objective's text, named in the trials' notes
_MAX_BATCH = 900


def resolve_tracking_uri(cli_uri: Optional[str] = None, config_uri: Optional[str] = None) -> str:
    """CLI flag > $MLFLOW_TRACKING_URI > config > sqlite:///mlruns.db in the working directory.

    A relative SQLite path is made absolute so trial processes (whose working directory Ray may
    change) write to the same file as the driver.
    """
    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or config_uri or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


_REPLACEMENTS = [("<=", "le"), (">=", "ge"), ("<", "lt"), (">", "gt"), ("+", "plus"), ("=", "eq")]


def metric_key(key: str) -> str:
    """MLflow accepts letters, digits, _ - . / and spaces: map the rest (e.g. group '>=60' -> 'ge60')."""
    for a, b in _REPLACEMENTS:
        key = key.replace(a, b)
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key)


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created as a training experiment (``mlflow.experimentKind``) if missing. An
    existing experiment without a kind gets it too; a kind already set (e.g. chosen in the UI) is kept."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
        except Exception:  # created concurrently
            exp = client.get_experiment_by_name(name)
    if not exp.tags.get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    return exp.experiment_id


def start_parent_run(uri: str, experiment: str, run_name: str, params: dict, tags: Optional[dict] = None,
                     run_id: Optional[str] = None, description: str = "") -> str:
    """Create (or, when resuming, reopen) the search's parent run and log its flat params."""
    client = MlflowClient(uri)
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    exp = experiment_id(client, experiment)
    run = client.create_run(exp, run_name=run_name, tags={ROLE_TAG: "search", **(tags or {})})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    if description:  # ends with the link to its trials, which needs the run's id
        mode = objective_mode((tags or {}).get(OBJECTIVE_TAG))
        client.set_tag(run.info.run_id, NOTE_TAG, f"{description}\n\n{trials_sentence(exp, run.info.run_id, mode)}")
    return run.info.run_id


def objective_mode(objective: Optional[str]) -> str:
    """'max' or 'min' for an objective's text; 'max' when there is none or it does not parse."""
    try:
        return parse_objective(objective).mode if objective else "max"
    except ValueError:
        return "max"


def trials_link(uri: str, parent_run_id: str) -> str:
    """The address of a search's trials in the MLflow UI (runs table of the model-training view)."""
    run = MlflowClient(uri).get_run(parent_run_id)
    mode = objective_mode(run.data.tags.get(OBJECTIVE_TAG))
    return f"{ui_base(uri)}/#{trials_route(run.info.experiment_id, parent_run_id, mode)}"


def ui_hint(uri: str, parent_run_id: str) -> str:
    """How to look at a search in the MLflow UI: start it (for a local store), then the trials link."""
    start = "" if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}, then open "
    return start + trials_link(uri, parent_run_id)


def log_metrics(client: MlflowClient, run_id: str, metrics: dict, step: int) -> None:
    ts = int(time.time() * 1000)
    items = [Metric(metric_key(k), float(v), ts, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for i in range(0, len(items), _MAX_BATCH):
        client.log_batch(run_id, metrics=items[i:i + _MAX_BATCH])


def _trial_note(run_id: str, client: MlflowClient, trial_id: str, params: dict, status: str, metrics: dict,
                objective: str) -> None:
    """The child run's description: mask/method, lr, status and best validation objective so far."""
    client.set_tag(run_id, NOTE_TAG, child_description(trial_id, params, status, metrics.get("best_objective"),
                                                       metrics.get("best_epoch"), objective))


class ChildRunLogger:
    """A trial's nested MLflow run; reused (not duplicated) when the trial is resumed. Its description
    (``mlflow.note.content``) says what the trial tries and how it fares, updated every epoch."""

    def __init__(self, uri: str, parent_run_id: str, trial_id: str, run_name: str, params: dict,
                 tags: Optional[dict] = None):
        self.client = MlflowClient(uri)
        parent = self.client.get_run(parent_run_id)
        exp = parent.info.experiment_id
        self.trial_id, self.params, self.best = trial_id, {k: str(v) for k, v in params.items()}, {}
        self.objective = parent.data.tags.get(OBJECTIVE_TAG, "objective")
        existing = self.client.search_runs(
            [exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
            max_results=1)
        if existing:
            self.run_id = existing[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "fairtune.resumed", "true")
        else:
            run = self.client.create_run(exp, run_name=run_name, tags={
                PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, ROLE_TAG: "trial", **(tags or {})})
            self.run_id = run.info.run_id
            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        _trial_note(self.run_id, self.client, trial_id, self.params, "running", self.best, self.objective)

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        log_metrics(self.client, self.run_id, metrics, step=epoch)
        self.best = {k: metrics[k] for k in ("best_objective", "best_epoch") if k in metrics}
        _trial_note(self.run_id, self.client, self.trial_id, self.params, "running", self.best, self.objective)

    def finish(self, status: str, reason: str = "") -> None:
        # a multi-worker trial's metrics come from its rank-0 worker, not through log_epoch: read them back
        best = self.best or self.client.get_run(self.run_id).data.metrics
        _trial_note(self.run_id, self.client, self.trial_id, self.params, status, best, self.objective)
        self.client.set_tag(self.run_id, "fairtune.status", status)
        if reason:
            self.client.set_tag(self.run_id, "fairtune.failure", reason[:5000])
        self.client.set_terminated(self.run_id, "FINISHED" if status != "failed" else "FAILED")


def finish_child_runs(uri: str, parent_run_id: str, statuses: dict[str, tuple[str, str]]) -> int:
    """Mark children by Ray trial id: {trial_id: (status, reason)}; returns how many were marked."""
    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    exp, objective = parent.info.experiment_id, parent.data.tags.get(OBJECTIVE_TAG, "objective")
    marked = 0
    for run in client.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=5000):
        tid = run.data.tags.get(TRIAL_TAG)
        if tid in statuses:
            status, reason = statuses[tid]
            _trial_note(run.info.run_id, client, tid, run.data.params, status, run.data.metrics, objective)
            client.set_tag(run.info.run_id, "fairtune.status", status)
            if reason:
                client.set_tag(run.info.run_id, "fairtune.failure", reason[:5000])
            # an ASHA stop is the search working, not a failure: FINISHED as Ray's MLflowLoggerCallback does
            # (KILLED draws MLflow's red failure icon); the tag fairtune.status says "stopped_early"
            client.set_terminated(run.info.run_id, "FAILED" if status == "failed" else "FINISHED")
            marked += 1
    return marked
