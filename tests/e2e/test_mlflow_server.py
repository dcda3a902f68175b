"""A search's MLflow layout as the UI sees it: through a real ``mlflow server`` on 127.0.0.1, the
parent run lists its nested trial runs, with their metrics (and per-epoch history) and artifacts,
using only the REST API the UI itself calls."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _get(base: str, endpoint: str, **params) -> dict:
    url = f"{base}{endpoint}?{urllib.parse.urlencode(params)}" if params else f"{base}{endpoint}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _wait_until_up(base: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}",
           "--default-artifact-root", str(tmp_path / "art"), "--host", HOST, "--port", str(port), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://{HOST}:{port}"
    try:
        _wait_until_up(base, proc, log)
        yield base
    finally:
        # the server runs in its own session (uvicorn/gunicorn workers included): end that group only
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def test_parent_lists_nested_runs_with_metrics_and_artifacts(mlflow_server, tmp_path):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from fairtune_ray.tracking import ChildRunLogger, start_parent_run
    from fairtune_ray.tracking.mlflow_runs import finish_child_runs

    base = mlflow_server
    parent = start_parent_run(base, "fairtune-server-test", "server-search",
                              params={"mask.space": "attn_mlp_norm", "train.objective": "min_auc"})
    client = MlflowClient(base)
    trials = {"t_00000": ("attn_mlp_norm[6/6]", "completed"), "t_00001": ("attn_mlp_norm[0/6]", "stopped_early"),
              "t_00002": ("attn_mlp_norm[3/6]", "completed")}
    for tid, (name, _) in trials.items():
        child = ChildRunLogger(base, parent, tid, name, params={"mask": "attn_mlp_norm:010110", "lr": 2e-4})
        epochs = 1 if tid == "t_00001" else 3
        for e in range(1, epochs + 1):
            child.log_epoch(e, {"objective": 0.6 + 0.05 * e, "val/overall_auc": 0.7 + 0.05 * e,
                                "val/group/>=60/auc": 0.6 + 0.05 * e, "train/loss": 0.7 - 0.1 * e, "epoch": e})
        note = tmp_path / f"{tid}_mask.txt"
        note.write_text(name)
        client.log_artifact(child.run_id, str(note), "masks")
    finish_child_runs(base, parent, {tid: (st, "") for tid, (_, st) in trials.items()})
    summary = tmp_path / "results.json"
    summary.write_text(json.dumps([{"method": "FairTune (selected)", "test/min_auc": 0.8}]))
    client.log_artifact(parent, str(summary))
    client.log_batch(parent, metrics=[Metric("fairtune_selected/test/min_auc", 0.8, 0, 0)])
    client.set_tag(parent, "mlflow.note.content", "**3 trials** (1 stopped early by ASHA)")

    # -- everything below goes through the REST API only
    run = _get(base, "/api/2.0/mlflow/runs/get", run_id=parent)["run"]
    exp_id = run["info"]["experiment_id"]
    tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    assert tags["mlflow.note.content"].startswith("**3 trials**")
    assert run["info"]["run_name"] == "server-search"

    found = _post(base, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp_id], "filter": f"tags.`mlflow.parentRunId` = '{parent}'", "max_results": 100})
    children = found.get("runs", [])
    assert len(children) == 3
    by_trial = {}
    for c in children:
        ctags = {t["key"]: t["value"] for t in c["data"]["tags"]}
        assert ctags["mlflow.parentRunId"] == parent
        by_trial[ctags["ray_trial_id"]] = (c, ctags)
    assert set(by_trial) == set(trials)
    for tid, (c, ctags) in by_trial.items():
        name, status = trials[tid]
        assert c["info"]["run_name"] == name  # method and mask in short form
        assert ctags["fairtune.status"] == status
        assert c["info"]["status"] == ("KILLED" if status == "stopped_early" else "FINISHED")
        metrics = {m["key"]: m for m in c["data"]["metrics"]}
        # grouped names: val/, train/, val/group/<name>/ (">=60" made MLflow-safe)
        assert {"objective", "val/overall_auc", "val/group/ge60/auc", "train/loss"} <= set(metrics)
        hist = _get(base, "/api/2.0/mlflow/metrics/get-history", run_id=c["info"]["run_id"], metric_key="objective")
        steps = sorted(int(m["step"]) for m in hist["metrics"])
        assert steps == ([1] if tid == "t_00001" else [1, 2, 3])
        arts = _get(base, "/api/2.0/mlflow/artifacts/list", run_id=c["info"]["run_id"], path="masks")
        assert [f["path"] for f in arts["files"]] == [f"masks/{tid}_mask.txt"]

    parent_arts = _get(base, "/api/2.0/mlflow/artifacts/list", run_id=parent)
    assert "results.json" in {f["path"] for f in parent_arts["files"]}
    assert "fairtune_selected/test/min_auc" in {m["key"] for m in run["data"]["metrics"]}
