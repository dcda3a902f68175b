"""The report's view of MLflow: is the store there, and what the search's parent run holds.

The report must work without MLflow (a copied run folder, a stopped server), so every read first
checks the store with ``store_reachable``, which never creates a store as a side effect.
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

import mlflow.artifacts
from mlflow.tracking import MlflowClient

from fairtune_ray.search.run_folder import RUN_INFO, write_json
from fairtune_ray.tracking.mlflow_runs import PARENT_TAG, TRIAL_TAG

REPORT_ARTIFACT_DIR = "report"  # where the report and its figures go on the parent run
SELECTED_TRIAL_PARAM = "selected.trial_id"


def store_reachable(uri: Optional[str], run_id: Optional[str] = None, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the tracking store answers (and holds ``run_id``); never creates a new store."""
    if not uri:
        return False, "no tracking URI is known for this run"
    problem = _store_problem(uri, timeout)
    if problem:
        return False, problem
    if run_id:
        try:
            MlflowClient(uri).get_run(run_id)
        except Exception as err:  # noqa: BLE001 - any store error means "not usable"
            return False, f"run {run_id} is not readable in {uri} ({type(err).__name__}: {str(err)[:200]})"
    return True, ""


def _store_problem(uri: str, timeout: float) -> str:
    """Why the store behind ``uri`` cannot be used without creating it ("" when it looks usable)."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        return "" if Path(path).is_file() else f"the SQLite store {path} does not exist"
    if uri.startswith(("http://", "https://")):
        p = urlparse(uri)
        port = p.port or (443 if p.scheme == "https" else 80)
        try:
            socket.create_connection((p.hostname, port), timeout=timeout).close()
        except OSError as err:
            return f"the tracking server {uri} does not answer ({err})"
        return ""
    if uri.startswith("file:") or "://" not in uri:
        local = uri[len("file://"):] if uri.startswith("file://") else uri[5:] if uri.startswith("file:") else uri
        return "" if Path(local).exists() else f"the file store {local} does not exist"
    return ""


class ParentRun:
    """A search's parent run in a store that answered ``store_reachable``."""

    def __init__(self, uri: str, run_id: str):
        self.uri = uri
        self.run_id = run_id
        self.client = MlflowClient(uri)

    def download(self, artifact_path: str, dst: Path) -> Optional[Path]:
        """One artifact (file or folder) into ``dst``; None when it is missing."""
        try:
            return Path(mlflow.artifacts.download_artifacts(run_id=self.run_id, artifact_path=artifact_path,
                                                            dst_path=str(dst), tracking_uri=self.uri))
        except Exception:  # noqa: BLE001 - a missing artifact is simply absent
            return None

    def artifact_files(self, path: Optional[str] = None) -> list[str]:
        """Every artifact file under ``path`` (recursively), as artifact paths."""
        files = []
        for a in self.client.list_artifacts(self.run_id, path):
            files.extend(self.artifact_files(a.path) if a.is_dir else [a.path])
        return files

    def param(self, key: str) -> Optional[str]:
        return self.client.get_run(self.run_id).data.params.get(key)

    def tag(self, key: str) -> Optional[str]:
        return self.client.get_run(self.run_id).data.tags.get(key)

    @property
    def experiment_id(self) -> str:
        return self.client.get_run(self.run_id).info.experiment_id

    def child_histories(self, key: str = "objective") -> list[dict]:
        """Per-epoch history of ``key`` for each nested child run (one per trial)."""
        parent = self.client.get_run(self.run_id)
        runs = self.client.search_runs([parent.info.experiment_id],
                                       filter_string=f"tags.`{PARENT_TAG}` = '{self.run_id}'", max_results=5000)
        out = []
        for run in runs:
            hist = sorted(self.client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
            tags = run.data.tags
            out.append({"trial_id": tags.get(TRIAL_TAG, run.info.run_id), "run_id": run.info.run_id,
                        "name": run.info.run_name, "status": tags.get("fairtune.status"),
                        "steps": [m.step for m in hist], "values": [m.value for m in hist]})
        return out

    def log_report(self, html: Path, figures: list[Path], description: str) -> None:
        """The report and its figures under ``report/``; ``description`` becomes the run's note."""
        for p in figures:
            self.client.log_artifact(self.run_id, str(p), f"{REPORT_ARTIFACT_DIR}/figures")
        self.client.log_artifact(self.run_id, str(html), REPORT_ARTIFACT_DIR)
        self.client.set_tag(self.run_id, "mlflow.note.content", description)


def open_parent_run(uri: Optional[str], run_id: Optional[str]) -> tuple[Optional[ParentRun], str]:
    """(the parent run, "") when the store answers and holds it, else (None, why not)."""
    if not run_id:
        return None, "no parent run id in fairtune_run.json"
    ok, why = store_reachable(uri, run_id)
    return (ParentRun(uri, run_id), "") if ok else (None, why)


def download_run(run_id: str, tracking_uri: str, dest: Path, log: Callable = print) -> Path:
    """Rebuild a run folder from a parent run's artifacts (everything but an earlier report)."""
    ok, why = store_reachable(tracking_uri, run_id)
    if not ok:
        raise FileNotFoundError(f"cannot read MLflow run {run_id}: {why}")
    parent = ParentRun(tracking_uri, run_id)
    run = parent.client.get_run(run_id)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = [f for f in parent.artifact_files() if not f.startswith(f"{REPORT_ARTIFACT_DIR}/")]
    for f in files:
        parent.download(f, dest)
    params = run.data.params
    write_json(dest / RUN_INFO, {"name": run.info.run_name, "parent_run_id": run_id, "tracking_uri": tracking_uri,
                                 "storage": params.get("search.storage"),
                                 "selected_trial_id": params.get(SELECTED_TRIAL_PARAM)})
    log(f"downloaded {len(files)} artifacts of run {run_id} ({run.info.run_name}) into {dest}")
    return dest
