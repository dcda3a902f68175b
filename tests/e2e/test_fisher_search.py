"""The Fisher method in the search: cached computation, build_model options, CLI, and a
``method: both`` search end to end on a real local Ray instance with a SQLite MLflow store."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import pandas as pd
import pytest
import torch

from fairtune_ray.config import config_from_dict
from fairtune_ray.fisher import neutralised_importance
from fairtune_ray.fisher.cache import (
    FisherUnavailableError,
    compute_fisher,
    fisher_cache_key,
    layer_summary,
    load_importance,
)
from fairtune_ray.fisher.stats import STAT_COLUMNS
from fairtune_ray.search.fisher_prior import fisher_seed_points
from fairtune_ray.training.setup import build_model
from fairtune_ray.training.spec import TrialSpec

from conftest import TINY  # the tiny experiment every slow test shares


def _cfg(cache_dir, **extra):
    return config_from_dict({}, overrides={**TINY, "data.cache_dir": str(cache_dir), **extra})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny data, a pre-trained micro backbone and a computed Fisher, shared by the module."""
    from fairtune_ray.data.loading import load_dataset
    from fairtune_ray.training.pretrain import resolve_checkpoint

    cache = tmp_path_factory.mktemp("fisher_cache")
    cfg = _cfg(cache)
    data = load_dataset(cfg.data)
    checkpoint = resolve_checkpoint(cfg, log=lambda *_: None)
    result = compute_fisher(cfg, data, checkpoint, use_ray=False, log=lambda *_: None)
    return {"cache": cache, "cfg": cfg, "data": data, "checkpoint": checkpoint, "result": result}


def test_fisher_is_cached_and_keyed(env, monkeypatch):
    first = env["result"]
    assert not first.cached
    assert first.meta["samples"] == {"light": 8, "medium": 8, "dark": 8}
    for path in (first.parquet_path, first.importance_path, first.plot_path):
        assert path.is_file()
    assert str(first.directory).startswith(str(env["cache"].resolve() / "fisher"))

    import fairtune_ray.fisher.cache as cache

    def boom(*_a, **_k):
        raise AssertionError("the cache must be hit, not recomputed")

    monkeypatch.setattr(cache, "run_fisher_task", boom)
    second = compute_fisher(env["cfg"], env["data"], env["checkpoint"], use_ray=False, log=lambda *_: None)
    assert second.cached and second.key == first.key
    for name, d in first.D.items():
        assert torch.equal(second.D[name], d)
    for g in (0.0, 1.0):
        for name, t in first.importance[g].items():
            assert torch.equal(second.importance[g][name], t)
    stats = pd.read_parquet(first.parquet_path)
    assert set(STAT_COLUMNS) <= set(stats.columns)
    assert set(stats["group"]) == {"light", "medium", "dark"}
    assert len(stats) == 3 * len(first.D)

    # what decides the values is in the key: the sample count and the attribute's data
    other = _cfg(env["cache"], **{"fisher.samples_per_group": 6})
    assert fisher_cache_key(other, env["data"], env["checkpoint"]) != first.key
    assert fisher_cache_key(env["cfg"], env["data"], None) != first.key


def test_importance_for_a_gamma_not_precomputed(env):
    res = env["result"]
    direct = neutralised_importance(res.fisher_by_group, gamma=2.5)[0]
    loaded = load_importance(str(res.importance_path), 2.5)
    assert set(loaded) == set(direct)
    for n in direct:
        torch.testing.assert_close(loaded[n], direct[n])
    stored = load_importance(str(res.importance_path), 1.0)
    for n, t in res.importance[1.0].items():
        assert torch.equal(stored[n], t)


def _with_importance(env, **extra):
    cfg = _cfg(env["cache"], **extra)
    cfg.fisher.importance_path = str(env["result"].importance_path)
    return cfg


def test_build_model_ewc_and_factorised_blocks(env):
    cfg = _with_importance(env)
    base, base_trainable, no_penalty = build_model(cfg, TrialSpec(mask="full"), env["checkpoint"])
    assert no_penalty is None
    torch.manual_seed(0)
    spec = TrialSpec(mask="full", ewc_lambda=10.0, gamma=1.0, rank=4, factorise=["qkv"])
    model, trainable, penalty = build_model(cfg, spec, env["checkpoint"])

    from fairtune_ray.models.lowrank import LowRankLinear

    qkv = model.get_submodule("blocks.0.attn.qkv")
    assert isinstance(qkv, LowRankLinear) and qkv.rank == 4
    m, n = base.get_submodule("blocks.0.attn.qkv").weight.shape
    depth = cfg.backbone.micro.depth
    assert trainable == base_trainable - depth * (m * n - 4 * (m + n))  # fewer than the dense weights
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)

    assert penalty is not None
    assert "head.weight" not in penalty.names and "blocks.0.mlp.fc1.weight" in penalty.names
    assert "blocks.0.attn.qkv.weight" not in penalty.names  # replaced by its factors
    assert float(penalty(model).detach()) == 0.0  # theta = theta* at the start
    with torch.no_grad():
        model.get_parameter("blocks.0.mlp.fc1.weight").add_(0.1)
    assert float(penalty(model).detach()) > 0.0


def test_the_one_logit_head_is_refused_as_a_factorisation_target(env):
    cfg = _with_importance(env)
    with pytest.raises(ValueError, match=r"'head' .*does not compress at rank 4"):
        build_model(cfg, TrialSpec(mask="full", gamma=0.0, rank=4, factorise=["head"]), env["checkpoint"])


def test_factorised_fc1_under_a_linear_probe_stays_frozen(env):
    """The factors follow the mask: a linear probe freezes fc1, so its factors do not train."""
    cfg = _with_importance(env)
    probe, probe_trainable, _ = build_model(cfg, TrialSpec(mask="linear"), env["checkpoint"])
    spec = TrialSpec(mask="linear", gamma=0.0, rank=4, factorise=["fc1"])
    model, trainable, penalty = build_model(cfg, spec, env["checkpoint"])
    assert penalty is None
    assert trainable == probe_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    fc1 = model.get_submodule("blocks.0.mlp.fc1")
    assert fc1.rank == 4 and not fc1.A.requires_grad and not fc1.B.requires_grad


def test_build_model_without_importance_is_a_clear_error(env):
    cfg = _cfg(env["cache"])
    with pytest.raises(FisherUnavailableError, match="fisher.importance_path"):
        build_model(cfg, TrialSpec(mask="full", ewc_lambda=1.0), env["checkpoint"])
    model, _, penalty = build_model(cfg, TrialSpec(mask="full", gamma=1.0), env["checkpoint"])  # Fisher off
    assert penalty is None


def test_seed_point_gives_a_fisher_only_trial(env):
    from fairtune_ray.search.space import initial_points, spec_from_trial_config

    cfg = _cfg(env["cache"], **{"search.method": "both"})
    n_bits = 12
    points = fisher_seed_points(cfg, n_bits, initial_points(cfg, n_bits, ["0" + "1" * 11]))
    spec = spec_from_trial_config(points[2], cfg, cfg.mask.space, n_bits)
    assert spec.mask.endswith(":" + "1" * n_bits) and spec.uses_fisher
    assert spec.ewc_lambda == cfg.fisher.ewc_lambda_max and spec.factorise == ["qkv", "proj", "fc1", "fc2"]
    assert len(points) == 4 and fisher_seed_points(cfg, n_bits, points) == points


def test_cli_prints_the_layer_summary(env, capsys):
    from fairtune_ray.cli import main

    sets = [x for k, v in {**TINY, "data.cache_dir": str(env["cache"])}.items() for x in ("--set", f"{k}={v}")]
    assert main(["fisher", *sets, "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "mean disparity D" in out and "(cached)" in out
    assert str(env["result"].parquet_path) in out
    summary = layer_summary(env["result"].stats)
    assert list(summary["mean_disparity"]) == sorted(summary["mean_disparity"], reverse=True)
    assert summary["importance_share"].sum() == pytest.approx(1.0, rel=1e-4)
    assert summary["layer"].iloc[0] in out


@pytest.mark.slow
def test_search_method_both_end_to_end(tmp_path, ray_local, monkeypatch):
    from mlflow.tracking import MlflowClient

    from fairtune_ray.search.results import Role
    from fairtune_ray.study import run_search

    # The driver reads every trial's metrics from Tune's result.json / progress.csv loggers.
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")

    cfg = _cfg(tmp_path / "cache", **{"search.method": "both", "search.storage": str(tmp_path / "runs"),
                                      "tracking.uri": f"sqlite:///{tmp_path / 'mlruns.db'}"})
    out = run_search(cfg, name="fisher-both", log=lambda *_: None)

    client = MlflowClient(out.tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(out.parent_run_id, "fisher")}
    assert {"fisher/fisher_stats.parquet", "fisher/disparity.png"} <= artifacts
    parent = client.get_run(out.parent_run_id)
    assert parent.data.metrics["fisher/mean_disparity"] > 0
    assert parent.data.metrics["fisher/cached"] == 0.0  # computed by this search's Ray task
    assert cfg.fisher.importance_path and os.path.isfile(cfg.fisher.importance_path)
    meta = json.loads((Path(cfg.fisher.importance_path).parent / "meta.json").read_text())
    assert meta["where"] == "ray-task"

    methods = [r.method for r in out.rows]
    assert methods[0] == "FairTune+Fisher (selected)" and "Fisher" in methods
    fisher_row = next(r for r in out.rows if r.method == "Fisher")
    assert fisher_row.role is Role.FISHER
    assert fisher_row.mask.endswith(":" + "1" * len(fisher_row.mask.split(":")[1]))
    assert fisher_row.ewc_lambda > 0 or fisher_row.rank > 0
    fisher_trials = [t for t in out.trials if int(t["config"].get("ewc_on", 0)) == 1]
    assert fisher_trials, "the Fisher seed point must have been evaluated"
