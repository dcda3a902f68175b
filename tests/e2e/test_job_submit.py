"""`ray job submit --working-dir .` of a smoke search to a real two-node Ray cluster on 127.0.0.1,
with its runs on a real `mlflow server`: the job succeeds, trials ran on both nodes, the server
holds the parent and one child run per trial. Everything is stopped by process id afterwards."""
import time
import uuid

import pytest
from mlflow.tracking import MlflowClient

from local_cluster import REPO, LocalCluster, MlflowServer

SMOKE = {
    "data.synthetic.n_samples": 300, "data.synthetic.val_samples": 0, "data.synthetic.test_samples": 0,
    "data.synthetic.source_samples": 400, "backbone.pretrain_epochs": 1,
    "train.epochs": 2, "train.threads": 1, "data.batch_size": 64,
    "search.num_samples": 3, "search.max_concurrent": 3, "search.n_initial_points": 2,
    "search.asha.grace_period": 2, "search.retrain_seeds": 1, "search.bootstrap": 10, "search.baselines": "[]",
    "search.confirm.top_k": 0,
    # 1 CPU per trial on a 2 + 1 CPU cluster: three concurrent trials fill both nodes
    "trial.resources.cpu": 1,
    # a fresh process per trial: with warm processes (the default) a seconds-long trial on the head can end
    # before the worker's first process has set up its runtime env, and Tune then reuses the head's process
    # for the third trial, so which nodes run trials would depend on start-up timing, not on the cluster
    "search.reuse_actors": "false",
}


def smoke_args(cache_dir: str, **extra) -> list[str]:
    args = []
    for k, v in {**SMOKE, "data.cache_dir": cache_dir, **extra}.items():
        args += ["--set", f"{k}={v}"]
    return args


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_job_submit_runs_a_search_on_two_nodes(session_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    t0 = time.perf_counter()
    cluster, server = LocalCluster(head_cpus=2, worker_cpus=1), None
    try:
        server = MlflowServer(tmp_path / "mlflow").launch()  # serves while the cluster starts
        cluster.start()
        server.wait_ready()
        ids = cluster.node_ids()
        assert set(ids) == {"head", "worker"}
        t_up = time.perf_counter() - t0

        job_id = f"fairtune-smoke-{uuid.uuid4().hex[:8]}"
        cluster.run("job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO),
                    "--submission-id", job_id, "--no-wait", "--",
                    "fairtune-ray", "search", *smoke_args(session_cache), "--name", "jobsmoke",
                    "--storage", str(tmp_path / "runs"), "--tracking-uri", server.uri)
        status = cluster.wait_job(job_id, timeout=600)
        logs = cluster.run("job", "logs", job_id, "--address", cluster.dashboard, check=False).stdout
        assert status == "SUCCEEDED", logs[-6000:]
        t_job = time.perf_counter() - t0 - t_up

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
        print(f"cluster + MLflow server up in {t_up:.0f}s; job (3 trials, retrain) {t_job:.0f}s")
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
    assert not cluster.processes()
