"""Multi-worker trials (Ray Train V2 TorchTrainer inside a Tune trial), GPU sharing, fault injection."""
import time

import pytest
import ray
from mlflow.tracking import MlflowClient

from fairtune_ray.config import load_config
from fairtune_ray.search.distributed import scaling_config
from fairtune_ray.testing.faults import FAULT_ENV, inject_fault
from fairtune_ray.training.loop import NonFiniteLossError
from fairtune_ray.training.process import cap_gpu_memory
from fairtune_ray.training.spec import TrialSpec


def test_scaling_config_from_trial_resources(tiny_overrides):
    cfg = load_config(None, overrides={**tiny_overrides, "trial.workers": 4, "trial.resources.cpu": 2,
                                       "trial.resources.gpu": 1})
    sc = scaling_config(cfg)
    assert sc.num_workers == 4 and sc.use_gpu
    assert sc.resources_per_worker == {"CPU": 2.0, "GPU": 1.0}
    cpu_only = scaling_config(load_config(None, overrides={**tiny_overrides, "trial.workers": 2,
                                                           "trial.resources.cpu": 0.5}))
    assert not cpu_only.use_gpu and cpu_only.resources_per_worker == {"CPU": 0.5}


def test_gpu_memory_cap_is_a_noop_without_a_fraction_or_gpu(monkeypatch):
    import torch

    assert cap_gpu_memory(0.0) is False and cap_gpu_memory(1.0) is False
    calls = []
    total = 24 * 1024 ** 3

    class Props:
        total_memory = total

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=0: Props())
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, device=0: calls.append((f, device)))
    assert cap_gpu_memory(0.25) is True
    # the share minus the CUDA context kept outside the allocator (tests/unit/training/test_process.py)
    assert calls == [(pytest.approx((0.25 * total - 500 * 2 ** 20) / total), 0)]


def test_fault_injection_rules(monkeypatch, tmp_path):
    full = TrialSpec(mask="s:1111", lr=2e-3)
    probe = TrialSpec(mask="s:0000", lr=5e-4)
    monkeypatch.delenv(FAULT_ENV, raising=False)
    inject_fault(2, full)  # unset: nothing happens
    monkeypatch.setenv(FAULT_ENV, "nan@epoch2:lr>1e-3;raise@epoch1:bits=0*:once")
    inject_fault(1, full)
    inject_fault(2, probe)
    with pytest.raises(NonFiniteLossError, match="injected"):
        inject_fault(2, full)
    with pytest.raises(RuntimeError, match="injected"):
        inject_fault(1, probe, str(tmp_path))
    inject_fault(1, probe, str(tmp_path))  # 'once': the retry of the same trial passes
    monkeypatch.setenv(FAULT_ENV, "raise@epoch1:rank=1")
    inject_fault(1, full, rank=0)
    with pytest.raises(RuntimeError):
        inject_fault(1, full, rank=1)
    monkeypatch.setenv(FAULT_ENV, "explode@epoch1")
    with pytest.raises(ValueError, match="cannot parse"):
        inject_fault(1, full)


@pytest.fixture
def ray_four_cpus(monkeypatch, ray_stopped):
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")  # the search reads the trials' result files
    # Two trials x (0.01 for the driving trial + 2 workers x 0.5 CPU); logical CPUs may exceed the cores.
    ray.init(num_cpus=4, include_dashboard=False)
    yield


@pytest.mark.slow
def test_two_worker_trials_report_every_epoch(tiny_overrides, ray_four_cpus):
    from fairtune_ray.study import run_search

    cfg = load_config(None, overrides={**tiny_overrides, "trial.workers": 2, "trial.resources.cpu": 0.5,
                                       "search.num_samples": 2, "search.max_concurrent": 2,
                                       "search.asha.grace_period": 2, "search.baselines": [],
                                       "search.bootstrap": 10})
    t0 = time.perf_counter()
    out = run_search(cfg, name="multi", report=False, log=lambda *_: None)  # the report: test_search_e2e
    elapsed = time.perf_counter() - t0

    assert len(out.trials) == 2
    for rec in out.trials:
        assert rec["epochs"] == 2 and rec["status"] == "completed"
    client = MlflowClient(out.tracking_uri)
    exp = client.get_run(out.parent_run_id).info.experiment_id
    children = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{out.parent_run_id}'")
    assert len(children) == 2
    for child in children:
        # rank 0 logged every epoch; Accelerate on each worker saw the 2-process group Ray Train set up
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val/min_auc")] == [1, 2]
        assert [m.value for m in client.get_metric_history(child.info.run_id, "world_size")] == [2.0, 2.0]
        assert child.data.tags["fairtune.workers"] == "2" and child.data.tags["fairtune.status"] == "completed"
        assert child.data.params["effective_batch_size"] == str(2 * cfg.data.batch_size)  # 2 workers x batch
        assert child.data.tags["node"] and child.data.tags["rank0_node"]
    # Tune saw one result per epoch (rank 0's record, forwarded by TuneReportCallback)
    grid = ray.tune.ExperimentAnalysis(f"{cfg.search.storage}/multi")
    for df in grid.trial_dataframes.values():
        assert list(df["epoch"]) == [1, 2] and set(df["world_size"]) == {2}
    # the worker groups released their resources
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < 4 and time.time() < deadline:
        time.sleep(1)
    assert ray.available_resources().get("CPU", 0) == pytest.approx(4)
    # and the per-trial placement-group reapers have exited
    deadline = time.time() + 30
    while _reapers() and time.time() < deadline:
        time.sleep(1)
    assert not _reapers()
    print(f"2 two-worker trials + selection/retrain: {elapsed:.0f}s")


def _reapers() -> list:
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any("PlacementGroupReaper" in a for a in (p.info["cmdline"] or [])):
                found.append(p.pid)
        except psutil.Error:
            pass
    return found
