"""Resume an interrupted search; failing trials (an exception, a NaN loss).

- Resume: a search running in a subprocess gets SIGINT (Ctrl-C) once two trials have finished;
  Tune saves its state and `fairtune-ray search` stops with the resume command. `--resume` then
  continues with `Tuner.restore`: the finished trials are kept (not rerun), the others run, and
  MLflow holds one child run per trial.
- Faults (test-only knob FAIRTUNE_FAULT_INJECT): a trial whose loss becomes NaN at epoch 2 fails
  every attempt and is recorded as failed with its reason in Tune and MLflow; a trial that raises
  once is retried (search.max_failures) and completes; the search itself completes and selects
  among the successful trials.

Losing a worker node is tested in test_two_node_cluster.py, on the local cluster it shares.
"""
import glob
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fairtune_ray.config import load_config
from local_cluster import BIN, base_env
from search_records import QUIET, children, cli_args, trial_states

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
    out = run_search(cfg, name="resumable", resume=True, report=False, log=lambda *_: None)
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
    out = run_search(cfg, name="faults", report=False, log=lambda *_: None)
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
