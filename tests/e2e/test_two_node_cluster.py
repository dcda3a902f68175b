"""A real two-node Ray cluster on 127.0.0.1, started once for this module (a start and stop cost about
20 s on 2 cores); everything is stopped by process id afterwards.

- Job submission: `ray job submit --working-dir .` of a smoke search, with its runs on a real
  `mlflow server`: the job succeeds, trials ran on both nodes, the server holds the parent and one
  child run per trial.
- Node loss (last: it takes the worker node away): the second node's raylet is killed (by pid) while
  a trial runs there; the trial is retried on the head node and the search completes.

The cluster lives only while this module's tests run: a Ray instance started by `ray start` is one
that `ray.init()` elsewhere in the suite could find.
"""
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from local_cluster import BIN, REPO, LocalCluster, MlflowServer
from search_records import QUIET, children, cli_args, trial_states

SMOKE = {
    "data.synthetic.n_samples": 300, "data.synthetic.val_samples": 0, "data.synthetic.test_samples": 0,
    "data.synthetic.source_samples": 400, "backbone.pretrain_epochs": 1,
    "train.epochs": 2, "train.threads": 1, "data.batch_size": 64,
    "search.num_samples": 3, "search.max_concurrent": 3, "search.n_initial_points": 2,
    "search.asha.grace_period": 2, "search.retrain_seeds": 1, "search.bootstrap": 10, "search.baselines": [],
    "search.confirm.top_k": 0,
    # 1 CPU per trial on a 2 + 1 CPU cluster: three concurrent trials fill both nodes
    "trial.resources.cpu": 1,
    # a fresh process per trial: with warm processes (the default) a seconds-long trial on the head can end
    # before the worker's first process has set up its runtime env, and Tune then reuses the head's process
    # for the third trial, so which nodes run trials would depend on start-up timing, not on the cluster
    "search.reuse_actors": "false",
}


@pytest.fixture(scope="module")
def cluster_and_server(tmp_path_factory):
    """Two nodes, the head (2 CPUs) and a worker (1 CPU), each tagged with its role resource; and an
    `mlflow server`, launched first so that it comes up while the cluster starts (about 10 s each)."""
    cluster = LocalCluster(head_cpus=2, worker_cpus=1)
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).launch()
    try:
        cluster.start()
        yield cluster, server.wait_ready()
    finally:
        server.stop()
        cluster.stop()
    assert not cluster.processes()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_job_submit_runs_a_search_on_two_nodes(cluster_and_server, session_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    cluster, server = cluster_and_server
    ids = cluster.node_ids()
    assert set(ids) == {"head", "worker"}
    t0 = time.perf_counter()
    job_id = f"fairtune-smoke-{uuid.uuid4().hex[:8]}"
    cluster.run("job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO),
                "--submission-id", job_id, "--no-wait", "--",
                "fairtune-ray", "search", *cli_args({**SMOKE, "data.cache_dir": session_cache}), "--name", "jobsmoke",
                "--storage", str(tmp_path / "runs"), "--tracking-uri", server.uri)
    status = cluster.wait_job(job_id, timeout=600)
    logs = cluster.run("job", "logs", job_id, "--address", cluster.dashboard, check=False).stdout
    assert status == "SUCCEEDED", logs[-6000:]
    t_job = time.perf_counter() - t0

    client = MlflowClient(server.uri)  # over REST, from the server
    exp = client.get_experiment_by_name("fairtune-ray")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`fairtune.role` = 'search'")
    assert [p.info.run_name for p in parents] == ["jobsmoke"]
    parent = parents[0]
    assert parent.info.status == "FINISHED" and "selected.mask" in parent.data.params
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 3 and len({c.data.tags["ray_trial_id"] for c in children}) == 3
    for c in children:
        assert c.data.tags["fairtune.status"] == "completed"
        assert len(client.get_metric_history(c.info.run_id, "val/min_auc")) == 2
    nodes = {c.data.tags["node"] for c in children}
    assert nodes == {ids["head"], ids["worker"]}, (nodes, ids)
    print(f"job (3 trials, retrain) {t_job:.0f}s")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_search_survives_losing_a_worker_node(cluster_and_server, session_cache, tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    over = {**tiny_overrides, **QUIET, "data.cache_dir": session_cache, "search.num_samples": 3,
            "search.max_concurrent": 3, "search.max_failures": 2, "search.asha.grace_period": 4,
            "train.epochs": 4, "trial.resources.cpu": 1, "tracking.uri": uri}
    cluster, proc = cluster_and_server[0], None
    t0 = time.perf_counter()
    try:
        ids = cluster.node_ids()
        assert set(ids) == {"head", "worker"}
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
