"""The same config and seed on the same machine give the same results table (one trial at a time),
and the run folder and MLflow record what else decides the numbers."""
import json

import pytest
from mlflow.tracking import MlflowClient

from fairtune_ray.config import load_config
from fairtune_ray.search.results import results_table
from fairtune_ray.study import run_search


@pytest.mark.slow
def test_two_identical_runs_give_identical_tables(tiny_overrides, ray_local):
    cfg = load_config(None, overrides={**tiny_overrides, "search.max_concurrent": 1, "search.num_samples": 3,
                                       "search.confirm.top_k": 1, "search.confirm.seeds": 2})
    first = run_search(cfg, name="repro-a", report=False, log=lambda *_: None)
    second = run_search(cfg, name="repro-b", report=False, log=lambda *_: None)

    assert [t["objective"] for t in first.trials] == [t["objective"] for t in second.trials]
    assert [t["config"] for t in first.trials] == [t["config"] for t in second.trials]
    assert [r.to_flat() for r in first.rows] == [r.to_flat() for r in second.rows]
    assert results_table(first.rows) == results_table(second.rows)

    env = json.loads((first.run_dir / "environment.json").read_text())
    assert env == json.loads((second.run_dir / "environment.json").read_text())
    assert env["trial_threads"] == 1 and env["max_concurrent"] == 1 and len(env["checkpoint_sha256"]) == 64
    assert env["versions"]["torch"].startswith("2.") and len(env["data_fingerprint"]) == 16
    tags = MlflowClient(first.tracking_uri).get_run(first.parent_run_id).data.tags
    assert tags["fairtune.env.checkpoint_sha256"] == env["checkpoint_sha256"]
    assert tags["fairtune.env.version.timm"] == env["versions"]["timm"]
