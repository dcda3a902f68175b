"""Resume an interrupted search; failing trials (an exception, a NaN loss) and a lost worker node.

- Resume: a search running in a subprocess gets SIGINT (Ctrl-C) once two trials have finished;
  Tune saves its state and `fairtune-ray search` stops with the resume command. `--resume` then
  continues with `Tuner.restore`: the finished trials are kept (not rerun), the others run, and
  MLflow holds one child run per trial.
- Faults (test-only knob FAIRTUNE_FAULT_INJECT): a trial whose loss becomes NaN at epoch 2 fails
  every attempt and is recorded as failed with its reason in Tune and MLflow; a trial that raises
  once is retried (search.max_failures) and completes; the search itself completes and selects
  among the successful trials.
- Node loss: on a local two-node cluster, the second node's raylet is killed (by pid) while a trial
  runs there; the trial is retried on the head node and the search completes.
"""
import glob
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fairtune_ray.config import load_config
from local_cluster import BIN, REPO, LocalCluster, base_env

QUIET = {"search.baselines": [], "search.bootstrap": 10, "search.retrain_seeds": 1}


def trial_states(exp_dir: Path) -> dict[str, dict]:
    """{trial_id: {"status", "num_failures"}} from Tune's newest experiment-state file."""
    files = sorted(glob.glob(str(exp_dir / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        data = json.loads(Path(files[-1]).read_text())
    except (OSError, json.JSONDecodeError):  # being rewritten
        return {}
    out = {}
    for trial_json, runtime_json in data["trial_data"]:
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        out[trial["trial_id"]] = {"status": trial["status"], "num_failures": runtime["num_failures"]}
    return out


def children(uri: str, parent_name: str, experiment: str = "fairtune-ray"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`fairtune.role` = 'search'")
    parents = [p for p in parents if p.info.run_name == parent_name]
    assert len(parents) == 1, [p.info.run_name for p in parents]
    kids = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    return client, parents[0], kids


def cli_args(overrides: dict) -> list[str]:
    args = []
    for k, v in overrides.items():
        args += ["--set", f"{k}={json.dumps(v) if isinstance(v, list) else v}"]
    return args


SAMPLES = 6  # trials of the interrupted search


@pytest.fixture
def tune_logs(monkeypatch):
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")  # the search reads the trials' result files
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_interrupted_search_resumes_without_rerunning_or_duplicating(tiny_overrides, tmp_path, tune_logs, ray_local):
    from fairtune_ray.study import run_search

    # warm trial processes start a trial in a fraction of a second: enough trials left to interrupt
    over = {**tiny_overrides, **QUIET, "search.num_samples": SAMPLES, "search.max_concurrent": 1,
            "search.asha.grace_period": 2, "train.epochs": 2}
    exp_dir = Path(over["search.storage"]) / "resumable"
    env = {**base_env(), "TUNE_GLOBAL_CHECKPOINT_S": "1"}  # keep Tune's saved state fresh
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "fairtune-ray"), "search", *cli_args(over), "--name", "resumable"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            done = [t for t, s in trial_states(exp_dir).items() if s["status"] == "TERMINATED"]
            if len(done) >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"the search ended before it could be interrupted:\n{proc.stdout.read()[-4000:]}"
        proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune stops the trials and saves the experiment state
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    t_first = time.perf_counter() - t0
    assert proc.returncode != 0
    assert "--resume --name resumable" in out, out[-4000:]
    before = trial_states(exp_dir)
    finished_before = {t for t, s in before.items() if s["status"] == "TERMINATED"}
    assert 2 <= len(finished_before) < SAMPLES, before
    progress_before = {t: _progress_rows(exp_dir, t) for t in finished_before}
    _, parent_before, kids_before = children(over["tracking.uri"], "resumable")
    assert parent_before.info.status == "KILLED"

    t1 = time.perf_counter()
    cfg = load_config(None, overrides=over)
    out = run_search(cfg, name="resumable", resume=True, log=lambda *_: None)
    t_resume = time.perf_counter() - t1

    after = trial_states(exp_dir)
    assert len(after) == SAMPLES and all(s["status"] == "TERMINATED" for s in after.values()), after
    assert finished_before <= set(after)
    for t in finished_before:  # kept, not rerun: no new result rows
        assert _progress_rows(exp_dir, t) == progress_before[t]
    assert len(out.trials) == SAMPLES
    client, parent, kids = children(over["tracking.uri"], "resumable")
    assert parent.info.run_id == parent_before.info.run_id == out.parent_run_id and parent.info.status == "FINISHED"
    trial_ids = [k.data.tags["ray_trial_id"] for k in kids]
    assert len(kids) == SAMPLES and len(set(trial_ids)) == SAMPLES and set(trial_ids) == set(after)
    for k in kids:
        assert k.data.tags["fairtune.status"] in ("completed", "stopped_early")
        if k.data.tags["ray_trial_id"] in finished_before:
            assert "fairtune.resumed" not in k.data.tags  # its trial function never ran again
    assert {k.data.tags["ray_trial_id"] for k in kids_before} <= set(trial_ids)
    print(f"interrupted after {t_first:.0f}s with {len(finished_before)} trials done; resume {t_resume:.0f}s")


def _progress_rows(exp_dir: Path, trial_id: str) -> int:
    [trial_dir] = glob.glob(str(exp_dir / f"*{trial_id}*"))
    return len(Path(trial_dir, "progress.csv").read_text().strip().splitlines()) - 1


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_failing_trials_are_recorded_retried_and_do_not_end_the_search(tiny_overrides, tmp_path, tune_logs,
                                                                         monkeypatch, ray_stopped):
    from fairtune_ray.search.preflight import check_mask_space
    from fairtune_ray.study import run_search
    from fairtune_ray.testing.faults import fault_env

    cfg = load_config(None, overrides={**tiny_overrides, **QUIET, "search.num_samples": 3, "search.max_concurrent": 2,
                                       "search.max_failures": 1, "search.asha.grace_period": 2})
    n = check_mask_space(cfg).n_bits
    full, linear = "1" * n, "0" * n  # the first two proposals (points_to_evaluate, at train.lr = 5e-4)
    at_train_lr = "lr>4.99e-4:lr<5.01e-4"  # TPE's own proposals have other learning rates
    # read by the trial processes: set before Ray starts (workers inherit the environment)
    rules = f"nan@epoch2:bits={full}:{at_train_lr};raise@epoch1:bits={linear}:{at_train_lr}:once"
    for key, value in fault_env(rules).items():
        monkeypatch.setenv(key, value)
    t0 = time.perf_counter()
    out = run_search(cfg, name="faults", log=lambda *_: None)
    elapsed = time.perf_counter() - t0

    states = trial_states(Path(cfg.search.storage) / "faults")
    client, parent, kids = children(cfg.tracking.uri, "faults")
    assert len(kids) == 3 and len({k.data.tags["ray_trial_id"] for k in kids}) == 3  # retries reuse the run
    by_mask = {k.data.params["mask"].split(":")[1]: k for k in kids if float(k.data.params["lr"]) == 5e-4}
    nan_run, flaky_run = by_mask[full], by_mask[linear]

    nan_id = nan_run.data.tags["ray_trial_id"]
    assert states[nan_id]["status"] == "ERROR" and states[nan_id]["num_failures"] == 2  # 1 try + 1 retry
    assert out.statuses[nan_id][0] == "failed"
    assert nan_run.data.tags["fairtune.status"] == "failed" and nan_run.info.status == "FAILED"
    assert "NonFiniteLossError" in nan_run.data.tags["fairtune.failure"]
    assert "loss became nan" in nan_run.data.tags["fairtune.failure"]

    flaky_id = flaky_run.data.tags["ray_trial_id"]
    assert states[flaky_id]["status"] == "TERMINATED" and states[flaky_id]["num_failures"] == 1
    assert flaky_run.data.tags["fairtune.status"] == "completed"
    assert flaky_run.data.tags.get("fairtune.resumed") == "true"  # the retry found its child run
    assert [m.step for m in client.get_metric_history(flaky_run.info.run_id, "val/min_auc")] == [1, 2]

    assert out.selected["trial_id"] != nan_id  # selection among the successful trials
    assert parent.info.status == "FINISHED"
    recorded = json.loads((out.run_dir / "trials.json").read_text())
    assert {r["trial_id"]: r["status"] for r in recorded}.get(nan_id) == "failed"
    print(f"fault search: {elapsed:.0f}s")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_search_survives_losing_a_worker_node(session_cache, tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    over = {**tiny_overrides, **QUIET, "data.cache_dir": session_cache, "search.num_samples": 3,
            "search.max_concurrent": 3, "search.max_failures": 2, "search.asha.grace_period": 4,
            "train.epochs": 4, "trial.resources.cpu": 1, "tracking.uri": uri}
    cluster, proc = LocalCluster(head_cpus=2, worker_cpus=1), None
    t0 = time.perf_counter()
    try:
        cluster.start()
        ids = cluster.node_ids()
        proc = subprocess.Popen([str(BIN / "fairtune-ray"), "search", *cli_args(over), "--name", "nodeloss",
                                 "--address", cluster.address], env=cluster.env, cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        # wait until a trial has started on the second node, then take that node away
        client, deadline, victim = MlflowClient(uri), time.time() + 400, None
        while victim is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            exp = client.get_experiment_by_name("fairtune-ray") if Path(tmp_path / "mlruns.db").exists() else None
            if exp is None:
                continue
            for run in client.search_runs([exp.experiment_id], filter_string="tags.`fairtune.role` = 'trial'"):
                if run.data.tags.get("node") == ids["worker"] and run.info.status == "RUNNING":
                    victim = run.data.tags["ray_trial_id"]
        assert victim, f"no trial ran on the worker node:\n{_drain(proc)}"
        cluster.kill_worker_node()
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-6000:]
        assert {n["node_id"]: n["state"] for n in cluster.nodes()}[ids["worker"]] == "DEAD"
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        cluster.stop()
    elapsed = time.perf_counter() - t0

    states = trial_states(Path(over["search.storage"]) / "nodeloss")
    assert len(states) == 3 and all(s["status"] == "TERMINATED" for s in states.values()), states
    assert states[victim]["num_failures"] >= 1
    _, parent, kids = children(uri, "nodeloss")
    assert len(kids) == 3 and parent.info.status == "FINISHED"
    moved = next(k for k in kids if k.data.tags["ray_trial_id"] == victim)
    assert moved.data.tags["node"] == ids["head"]  # retried on the surviving node, same child run
    assert moved.data.tags["fairtune.status"] == "completed" and moved.data.tags["fairtune.resumed"] == "true"
    print(f"node-loss search on the two-node cluster: {elapsed:.0f}s")


def _drain(proc) -> str:
    if proc is None:
        return ""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return (proc.communicate()[0] or "")[-4000:]
