"""Warm trial processes (``search.reuse_actors``, the default) leak nothing from one trial to the next.

Real Ray with one CPU, so that one process runs three trials in turn: configuration A, then B (another
mask and lr), then A again. A's second run, in the process B left behind, must train exactly as its
first did in a fresh process (seed, torch threads, model and optimizer state), hold no module or
parameter more than the first (nothing of B's model kept alive), and log into its own MLflow child run.
"""
import json

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from fairtune_ray.config import load_config
from fairtune_ray.data.loading import load_dataset
from fairtune_ray.search.epoch_hook import HOOK_ENV
from fairtune_ray.search.preflight import preflight
from fairtune_ray.search.space import build_param_space, matches_point
from fairtune_ray.search.trial import run_trial
from fairtune_ray.search.tuner import build_tuner
from fairtune_ray.testing.probes import PROBE_DIR_ENV, PROBE_FILE, PROBE_HOOK
from fairtune_ray.tracking import start_parent_run
from fairtune_ray.training.pretrain import resolve_checkpoint


@pytest.fixture
def ray_one_cpu(monkeypatch, tmp_path, ray_stopped):
    (tmp_path / "probes").mkdir()
    monkeypatch.setenv(HOOK_ENV, PROBE_HOOK)  # read by the trial processes: set before Ray starts
    monkeypatch.setenv(PROBE_DIR_ENV, str(tmp_path / "probes"))
    ray.init(num_cpus=1, include_dashboard=False)
    yield


def _point(n_bits: int, bits: str, lr: float) -> dict:
    return {**{f"m{i:02d}": int(b) for i, b in enumerate(bits)}, "lr": lr}


@pytest.mark.slow
def test_a_reused_trial_process_trains_the_next_trial_as_a_fresh_one(tiny_overrides, ray_one_cpu, tmp_path):
    cfg = load_config(None, overrides={**tiny_overrides, "train.epochs": 2, "search.num_samples": 3,
                                       "search.max_concurrent": 1})
    assert cfg.search.reuse_actors  # the default
    n_bits = preflight(cfg).n_bits
    a, b = _point(n_bits, "1" * n_bits, 5e-4), _point(n_bits, "01" * (n_bits // 2), 1e-3)
    parent = start_parent_run(cfg.tracking.uri, "warm-trials", "warm", params={})
    trainable = tune.with_parameters(
        run_trial, cfg_dict=cfg.model_dump(), data=load_dataset(cfg.data),
        checkpoint=str(resolve_checkpoint(cfg, log=lambda *_: None)), space_name=cfg.mask.space, n_bits=n_bits,
        tracking={"uri": cfg.tracking.uri, "parent_run_id": parent, "method": "fairtune"})
    tuner = build_tuner(cfg, trainable, build_param_space(cfg, n_bits), [a, b, a], str(tmp_path / "runs"), "warm",
                        scheduler=FIFOScheduler(), verbose=0)
    grid = tuner.fit()
    assert grid.num_errors == 0
    results = sorted(grid, key=lambda r: r.metrics["timestamp"])  # one CPU: each trial ends before the next starts
    assert [matches_point(r.config, p) for r, p in zip(results, (a, b, a))] == [True] * 3, \
        [r.metrics["trial_id"] for r in results]

    probes = [[json.loads((tmp_path / "probes" / PROBE_FILE.format(trial_id=r.metrics["trial_id"], epoch=e)).read_text())
               for e in (1, 2)] for r in results]
    assert len({p[0]["pid"] for p in probes}) == 1, "one process ran all three trials"
    first, _, again = probes
    for e in range(2):
        assert again[e]["threads"] == first[e]["threads"] == cfg.train.threads
        assert again[e]["initial_seed"] == first[e]["initial_seed"]
        assert (again[e]["modules"], again[e]["parameters"]) == (first[e]["modules"], first[e]["parameters"])

    client = MlflowClient(cfg.tracking.uri)
    runs = {r.data.tags["ray_trial_id"]: r for r in client.search_runs(
        [client.get_run(parent).info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")}
    assert len(runs) == 3 and len({r.data.tags["process"] for r in runs.values()}) == 1
    curves = []
    for res in results:
        run = runs[res.metrics["trial_id"]]
        curve = {key: [m.value for m in client.get_metric_history(run.info.run_id, key)]
                 for key in ("train/loss", "val/min_auc", "val/overall_auc")}
        assert all(len(v) == 2 for v in curve.values())  # its own two epochs, nothing from another trial
        curves.append(curve)
    assert curves[2] == curves[0]  # A in the process B left behind trains exactly as A in a fresh one
    assert curves[1] != curves[0]
