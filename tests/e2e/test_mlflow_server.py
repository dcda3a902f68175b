"""A search's MLflow layout as the UI sees it: through a real ``mlflow server`` on 127.0.0.1, the
experiment is a training experiment, the parent run lists its nested trial runs, with their metrics
(the same keys, per epoch) and artifacts, and every run describes itself, using only the REST API the
UI itself calls. With playwright and a Chromium (``FAIRTUNE_CHROMIUM`` or one on the PATH) a headless
browser also opens the links this project writes (skipped otherwise)."""
from __future__ import annotations

import json
import os
import shutil
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


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mlflow_server")
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


TRIALS = {"t_00000": ("attn_mlp_norm:111111", "attn_mlp_norm[6/6]", 3, "completed"),
          "t_00001": ("attn_mlp_norm:000000", "attn_mlp_norm[0/6]", 1, "stopped_early"),
          "t_00002": ("attn_mlp_norm:010110", "attn_mlp_norm[3/6]", 3, "completed")}
GROUPS = {0: "light", 1: ">=60", 2: "dark"}
EXPERIMENT = "fairtune-server-test"


def _epoch_record(rng, epoch: int, trial: int) -> dict:
    """What a trial logs per epoch: train loss, objective and every validation metric (dataset level)."""
    import numpy as np

    from fairtune_ray.metrics import compute_metrics

    y, g = rng.integers(0, 2, 300), rng.integers(0, 3, 300)
    y[:6], g[:6] = [0, 1, 0, 1, 0, 1], [0, 0, 1, 1, 2, 2]  # both classes in every group
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1, 300) + (0.4 + 0.3 * epoch + 0.1 * trial) * (2 * y - 1))))
    val = compute_metrics(y, scores, g, group_names=GROUPS)
    return {"epoch": epoch, "train/loss": 0.7 - 0.1 * epoch, "objective": val["min_auc"],
            **{f"val/{k}": v for k, v in val.items()}}


@pytest.fixture(scope="module")
def logged_search(mlflow_server, tmp_path_factory):
    """A search as the project logs it: parent, three trials (one stopped early by ASHA), the selected
    model (a logged model on the parent) and the parent's final description."""
    import numpy as np
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from fairtune_ray.tracking import (
        MODEL_URI_TAG, NOTE_TAG, ChildRunLogger, model_sentence, search_description, start_parent_run,
        trials_sentence,
    )
    from fairtune_ray.tracking.mlflow_runs import finish_child_runs

    base, tmp_path = mlflow_server, tmp_path_factory.mktemp("search")
    parent = start_parent_run(base, EXPERIMENT, "server-search",
                              params={"mask.space": "attn_mlp_norm", "train.objective": "min_auc"},
                              tags={"fairtune.objective": "min_auc"},
                              description=search_description("server-search", "fairtune", "attn_mlp_norm", 3, "min_auc"))
    client = MlflowClient(base)
    rng = np.random.default_rng(0)
    for i, (tid, (mask, name, epochs, _)) in enumerate(TRIALS.items()):
        child = ChildRunLogger(base, parent, tid, name, params={"mask": mask, "space": "attn_mlp_norm",
                                                                "lr": 2e-4 * (i + 1), "peft": "mask"})
        best, best_epoch = -1.0, 0
        for e in range(1, epochs + 1):
            record = _epoch_record(rng, e, i)
            if record["objective"] > best:
                best, best_epoch = record["objective"], e
            child.log_epoch(e, dict(record, best_objective=best, best_epoch=best_epoch))
        if tid != "t_00001":  # a trial stopped by ASHA never runs code after its last report
            child.finish("completed")
        note = tmp_path / f"{tid}_mask.txt"
        note.write_text(name)
        client.log_artifact(child.run_id, str(note), "masks")
    finish_child_runs(base, parent, {tid: (st, "") for tid, (*_, st) in TRIALS.items()})
    summary = tmp_path / "results.json"
    summary.write_text(json.dumps([{"method": "FairTune (selected)", "test/min_auc": 0.8}]))
    client.log_artifact(parent, str(summary))
    client.log_batch(parent, metrics=[Metric("fairtune_selected/test/min_auc", 0.8, 0, 0)])
    exp = client.get_run(parent).info.experiment_id
    model = client.create_logged_model(exp, name="model", source_run_id=parent)
    client.finalize_logged_model(model.model_id, "READY")
    client.set_tag(parent, MODEL_URI_TAG, f"models:/{model.model_id}")
    client.set_tag(parent, NOTE_TAG, "**3 trials** (1 stopped early by ASHA) of `fairtune` over the `attn_mlp_norm` "
                   "mask space, objective: validation `min_auc`. Selected `attn_mlp_norm:010110`: test worst-group "
                   f"AUC 0.800 [0.760, 0.840].\n\n{model_sentence(f'models:/{model.model_id}', exp, '/runs/s/model')}"
                   f"\n\n{trials_sentence(exp, parent)}")
    client.set_terminated(parent, "FINISHED")
    return {"base": base, "parent": parent, "exp": exp, "model_id": model.model_id}


def test_parent_lists_nested_runs_with_metrics_and_artifacts(logged_search):
    base, parent = logged_search["base"], logged_search["parent"]
    # -- everything below goes through the REST API only
    found_exp = _get(base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    exp_tags = {t["key"]: t["value"] for t in found_exp.get("tags", [])}
    assert exp_tags["mlflow.experimentKind"] == "custom_model_development"  # a training experiment
    run = _get(base, "/api/2.0/mlflow/runs/get", run_id=parent)["run"]
    exp_id = run["info"]["experiment_id"]
    assert exp_id == found_exp["experiment_id"]
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
    assert set(by_trial) == set(TRIALS)
    keys = set()
    for tid, (c, ctags) in by_trial.items():
        mask, name, epochs, status = TRIALS[tid]
        assert c["info"]["run_name"] == name  # method and mask in short form
        assert ctags["fairtune.status"] == status
        assert c["info"]["status"] == "FINISHED"  # stopped early is not a failure; the tag tells them apart
        note = ctags["mlflow.note.content"]  # the trial's description: mask, lr, status, best objective
        assert note.startswith(f"Trial `{tid}`: mask `{mask.split(':')[1]}` (attn_mlp_norm, ")
        assert f"Status: **{status.replace('_', ' ')}**." in note and "Best validation `min_auc`: 0." in note
        metrics = {m["key"]: m for m in c["data"]["metrics"]}
        # grouped names: val/, train/, val/group/<name>/ (">=60" made MLflow-safe)
        assert {"objective", "best_objective", "val/min_auc", "val/overall_auc", "val/eodds_diff",
                "val/group/ge60/auc", "val/group/dark/auc", "train/loss"} <= set(metrics)
        keys = keys or set(metrics)
        assert set(metrics) == keys  # the same keys in every trial: the chart view compares them
        for key in ("objective", "val/min_auc", "val/group/dark/auc", "train/loss"):
            hist = _get(base, "/api/2.0/mlflow/metrics/get-history", run_id=c["info"]["run_id"], metric_key=key)
            assert sorted(int(m["step"]) for m in hist["metrics"]) == list(range(1, epochs + 1))  # step = epoch
        arts = _get(base, "/api/2.0/mlflow/artifacts/list", run_id=c["info"]["run_id"], path="masks")
        assert [f["path"] for f in arts["files"]] == [f"masks/{tid}_mask.txt"]

    parent_arts = _get(base, "/api/2.0/mlflow/artifacts/list", run_id=parent)
    assert "results.json" in {f["path"] for f in parent_arts["files"]}
    assert "fairtune_selected/test/min_auc" in {m["key"] for m in run["data"]["metrics"]}


def test_the_parent_description_links_the_model_and_the_trials(logged_search):
    base, parent, exp, model_id = (logged_search[k] for k in ("base", "parent", "exp", "model_id"))
    run = _get(base, "/api/2.0/mlflow/runs/get", run_id=parent)["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    note = tags["mlflow.note.content"]
    assert tags["fairtune.model_uri"] == f"models:/{model_id}"
    assert f"](#/experiments/{exp}/models/{model_id}?workflowType=machine_learning)" in note
    assert "test worst-group AUC 0.800 [0.760, 0.840]" in note
    assert f"(#/experiments/{exp}/runs?workflowType=machine_learning&searchFilter=" in note
    model = _get(base, f"/api/2.0/mlflow/logged-models/{model_id}")["model"]  # the link's target exists
    assert model["info"]["source_run_id"] == parent and model["info"]["status"] == "LOGGED_MODEL_READY"


def test_the_server_serves_the_ui(mlflow_server):
    with urllib.request.urlopen(f"{mlflow_server}/", timeout=10) as r:
        assert r.status == 200 and r.headers.get_content_type() == "text/html"
        page = r.read().decode()
    assert '<div id="root"' in page
    script = page.split('src="', 1)[1].split('"', 1)[0]  # the UI's bundle, e.g. static-files/static/js/main.<hash>.js
    assert script.startswith("static-files/static/js/main.")
    with urllib.request.urlopen(f"{mlflow_server}/{script}", timeout=30) as r:
        assert r.status == 200 and len(r.read()) > 100_000


def _chromium() -> str:
    path = os.environ.get("FAIRTUNE_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium-headless-shell", "chromium", "chromium-browser")) if p), None)
    if not path:
        pytest.skip("no Chromium: set FAIRTUNE_CHROMIUM or put chromium(-headless-shell) on the PATH")
    return path


def test_a_browser_opens_the_trials_the_charts_and_the_model(logged_search):
    sync_api = pytest.importorskip("playwright.sync_api")
    from fairtune_ray.tracking import trials_link

    base, parent, model_id = logged_search["base"], logged_search["parent"], logged_search["model_id"]
    link = trials_link(base, parent)  # what the CLI prints
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1600, "height": 1100}).new_page()
        page.goto(link)
        # the runs table of the model-training view, the trials listed flat (not folded under the parent)
        for _, name, _, _ in TRIALS.values():
            sync_api.expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=60_000)
        sync_api.expect(page.get_by_text("3 matching runs")).to_be_visible()
        sync_api.expect(page.get_by_text("Model training", exact=True).first).to_be_visible()
        # the chart view draws the trials' per-epoch curves, one section per prefix (train, val, val/group/<g>)
        page.goto(link + "&compareRunsMode=CHART")
        sync_api.expect(page.get_by_role("heading", name="train/loss")).to_be_visible(timeout=60_000)
        sync_api.expect(page.get_by_text("val/group/dark").first).to_be_visible(timeout=30_000)
        page.get_by_role("searchbox", name="Search metric charts").fill("min_auc")  # charts render lazily
        sync_api.expect(page.get_by_role("heading", name="val/min_auc")).to_be_visible(timeout=30_000)
        for _, name, _, _ in TRIALS.values():  # one curve per trial
            sync_api.expect(page.get_by_text(f"{name} (val/min_auc)")).to_be_visible()
        # the parent's description renders its links; the model link opens the logged model's page
        page.goto(f"{base}/#/experiments/{logged_search['exp']}/runs/{parent}?workflowType=machine_learning")
        anchor = page.locator(f"a[href*='/models/{model_id}']").first
        sync_api.expect(anchor).to_be_visible(timeout=60_000)
        page.goto(f"{base}/{anchor.get_attribute('href')}")
        sync_api.expect(page.get_by_text(model_id).first).to_be_visible(timeout=60_000)
        browser.close()
