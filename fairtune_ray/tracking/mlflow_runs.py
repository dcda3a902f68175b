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

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "ray_trial_id"
ROLE_TAG = "fairtune.role"
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


def _experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created concurrently
        return client.get_experiment_by_name(name).experiment_id


def start_parent_run(uri: str, experiment: str, run_name: str, params: dict, tags: Optional[dict] = None,
                     run_id: Optional[str] = None) -> str:
    """Create (or, when resuming, reopen) the search's parent run and log its flat params."""
    client = MlflowClient(uri)
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    exp = _experiment_id(client, experiment)
    run = client.create_run(exp, run_name=run_name, tags={ROLE_TAG: "search", **(tags or {})})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return run.info.run_id


def log_metrics(client: MlflowClient, run_id: str, metrics: dict, step: int) -> None:
    ts = int(time.time() * 1000)
    items = [Metric(metric_key(k), float(v), ts, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for i in range(0, len(items), _MAX_BATCH):
        client.log_batch(run_id, metrics=items[i:i + _MAX_BATCH])


class ChildRunLogger:
    """A trial's nested MLflow run; reused (not duplicated) when the trial is resumed."""

    def __init__(self, uri: str, parent_run_id: str, trial_id: str, run_name: str, params: dict,
                 tags: Optional[dict] = None):
        self.client = MlflowClient(uri)
        parent = self.client.get_run(parent_run_id)
        exp = parent.info.experiment_id
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

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        log_metrics(self.client, self.run_id, metrics, step=epoch)

    def finish(self, status: str, reason: str = "") -> None:
        self.client.set_tag(self.run_id, "fairtune.status", status)
        if reason:
            self.client.set_tag(self.run_id, "fairtune.failure", reason[:5000])
        self.client.set_terminated(self.run_id, "FINISHED" if status != "failed" else "FAILED")


def finish_child_runs(uri: str, parent_run_id: str, statuses: dict[str, tuple[str, str]]) -> int:
    """Mark children by Ray trial id: {trial_id: (status, reason)}; returns how many were marked."""
    client = MlflowClient(uri)
    exp = client.get_run(parent_run_id).info.experiment_id
    marked = 0
    for run in client.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=5000):
        tid = run.data.tags.get(TRIAL_TAG)
        if tid in statuses:
            status, reason = statuses[tid]
            client.set_tag(run.info.run_id, "fairtune.status", status)
            if reason:
                client.set_tag(run.info.run_id, "fairtune.failure", reason[:5000])
            client.set_terminated(run.info.run_id, "FAILED" if status == "failed" else
                                  ("KILLED" if status == "stopped_early" else "FINISHED"))
            marked += 1
    return marked
