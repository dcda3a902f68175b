"""Shared fixtures: a tiny synthetic experiment whose data and pre-trained micro backbone are
built once per test session (no network, CPU only)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

TINY = {
    "data.synthetic.n_samples": 300,
    "data.synthetic.val_samples": 0,   # the demo's enlarged evaluation splits cost time, not coverage, here
    "data.synthetic.test_samples": 0,
    "data.synthetic.source_samples": 400,
    "backbone.pretrain_epochs": 1,
    "train.epochs": 2,
    "train.lr": 5e-4,   # the lr of the baseline points; tests recognise them by it
    "train.threads": 1,
    "data.batch_size": 64,
    "search.num_samples": 4,
    "search.max_concurrent": 2,
    "search.n_initial_points": 2,
    "search.retrain_seeds": 1,
    "search.bootstrap": 50,
    "search.asha.grace_period": 1,
    # the noise-aware stages cost extra fine-tunes: off here, on in the end-to-end search test
    "search.confirm.top_k": 0,
    "search.baseline_lrs": [5e-4],
    "fisher.samples_per_group": 8,
}


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("fairtune_cache"))


@pytest.fixture
def tiny_overrides(session_cache, tmp_path) -> dict:
    """Config overrides for a seconds-long experiment; storage and MLflow in this test's tmp dir."""
    return {**TINY, "data.cache_dir": session_cache, "search.storage": str(tmp_path / "runs"),
            "tracking.uri": f"sqlite:///{tmp_path / 'mlruns.db'}"}


@pytest.fixture
def tiny_cfg(tiny_overrides):
    from fairtune_ray.config import load_config

    return load_config(None, overrides=tiny_overrides)


@pytest.fixture
def ray_local():
    """A local Ray instance as ``run_search`` starts one (every core, no dashboard), shared by the tests that
    need nothing else of it: the first starts it, the next reuse it (a start and stop cost about 8 s on 2
    cores). A test that starts its own instance, or sets the trial processes' environment (they inherit it
    when Ray starts), takes ``ray_stopped`` instead."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=True)
    yield


@pytest.fixture
def ray_stopped():
    """No Ray instance in this process when the test starts (a shared one is stopped), none when it ends."""
    import ray

    ray.shutdown()
    yield
    ray.shutdown()
