"""The head is fitted before the Fisher pass (issue 15): a unique optimum, importances that do not
depend on the head's seed, a cached head every model of a Fisher study starts from."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed

from fairtune_ray.config import config_from_dict
from fairtune_ray.data.loading import BatchTransform
from fairtune_ray.fisher import neutralised_importance, per_group_fisher
from fairtune_ray.fisher.cache import compute_fisher, fisher_cache_key, load_fitted_head
from fairtune_ray.fisher.head import classifier, fit_heads, fit_logistic, pooled_features, set_head
from fairtune_ray.fisher.task import _samples, probe_subset, train_subset
from fairtune_ray.models import backbone_data_config, create_backbone
from fairtune_ray.training.setup import build_model
from fairtune_ray.training.spec import TrialSpec

from conftest import TINY

#: Spearman of the element-wise importance I between two head seeds that the fitted head must reach.
MIN_SPEARMAN = 0.9


def _cfg(cache_dir, **extra):
    return config_from_dict({}, overrides={**TINY, "data.cache_dir": str(cache_dir), **extra})


@pytest.fixture(scope="module")
def env(session_cache):
    """The tiny synthetic data and the pre-trained micro backbone (shared with the session)."""
    from fairtune_ray.data.loading import load_dataset
    from fairtune_ray.training.pretrain import resolve_checkpoint

    cfg = _cfg(session_cache)
    return {"cfg": cfg, "data": load_dataset(cfg.data), "checkpoint": resolve_checkpoint(cfg, log=lambda *_: None)}


def _head(model) -> dict[str, torch.Tensor]:
    clf = classifier(model)
    return {"weight": clf.weight.detach().clone(), "bias": clf.bias.detach().clone()}


# --------------------------------------------------------------------------- (a) a unique optimum
def test_fit_logistic_reaches_the_same_optimum_from_any_init():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g, dtype=torch.float64) * torch.linspace(0.1, 5.0, 16) + 3.0
    y = (torch.rand(200, generator=g) < torch.sigmoid(x[:, :4].sum(1) - 12.0)).double()
    w = torch.rand(200, generator=g, dtype=torch.float64) + 0.5
    inits = [{"weight": torch.zeros(1, 16), "bias": torch.zeros(1)},
             {"weight": torch.randn(1, 16, generator=g) * 3, "bias": torch.tensor([-4.0])}]
    heads = [fit_logistic(x, y, w, init, l2=0.01, steps=200, pos_weight=2.0) for init in inits]
    for name in ("weight", "bias"):
        assert torch.allclose(heads[0].state[name], heads[1].state[name], atol=1e-5, rtol=0), name
    assert abs(heads[0].loss - heads[1].loss) < 1e-8
    # the L2 term keeps a separable set finite, and the fit beats a constant predictor
    assert heads[0].accuracy > 0.7 and torch.isfinite(heads[0].state["weight"]).all()


# --------------------------------------------------------------------------- (b) seed stability
def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    try:
        from scipy.stats import spearmanr
    except ImportError:  # ranks by argsort: ties are negligible in float Fisher values
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        return float(np.corrcoef(ra, rb)[0, 1])
    return float(spearmanr(a, b).statistic)


def _importance(env, head_seed: int, fit: bool) -> np.ndarray:
    """Element-wise I (gamma 0) over every backbone parameter the Fisher covers, from a fresh head
    drawn with ``head_seed``; the same Fisher samples and probe rows for every seed."""
    cfg, data = env["cfg"], env["data"]
    attribute = cfg.data.sensitive_attribute
    set_seed(head_seed)
    model = create_backbone(cfg.backbone, num_classes=1, checkpoint=env["checkpoint"])
    transform = BatchTransform(backbone_data_config(model), augment=False)
    if fit:
        images, labels, groups = _samples(probe_subset(cfg, data), attribute)
        features = pooled_features(model, images, transform, torch.device("cpu"))
        f = cfg.fisher
        head = fit_heads(model, features, labels, groups, l2=f.head_l2, steps=f.head_steps, n_heads=1, seed=0,
                         group_balanced=bool(cfg.data.group_balanced), class_weights=cfg.data.class_weights)[0]
        set_head(model, head.state)
    images, labels, groups = _samples(train_subset(cfg, data)[0], attribute)
    fisher = per_group_fisher(model, transform(images, train=False), labels, groups,
                              samples_per_group=cfg.fisher.samples_per_group, seed=0)
    importance, _ = neutralised_importance(fisher, gamma=0.0)
    head = {f"head.{n}" for n in ("weight", "bias")}  # the micro ViT's classifier
    assert head <= set(importance)
    return torch.cat([importance[n].flatten().double() for n in sorted(importance) if n not in head]).numpy()


def test_importance_is_stable_across_head_seeds_after_fitting(env):
    fitted = _spearman(_importance(env, 1, fit=True), _importance(env, 2, fit=True))
    random = _spearman(_importance(env, 1, fit=False), _importance(env, 2, fit=False))
    print(f"\nSpearman of I between head seeds 1 and 2: fitted head {fitted:.4f}, random head {random:.4f}")
    assert fitted >= MIN_SPEARMAN
    assert fitted > random


# --------------------------------------------------------------------------- (c) cache and build_model
def test_cached_head_is_where_every_model_of_the_study_starts(env, tmp_path):
    cfg, data, checkpoint = _cfg(tmp_path), env["data"], env["checkpoint"]
    result = compute_fisher(cfg, data, checkpoint, use_ray=False, log=lambda *_: None)
    head = load_fitted_head(result.importance_path)
    assert head is not None and set(head) == {"weight", "bias"}
    assert torch.equal(load_fitted_head(result.directory)["weight"], head["weight"])
    fits = result.meta["head"]["fits"]
    assert len(fits) == cfg.fisher.head_seeds and fits[0]["accuracy"] > 0.5 and result.meta["head"]["fit_head"]

    assert load_fitted_head(None) is None
    model, _, _ = build_model(cfg, TrialSpec(mask="full"), checkpoint)  # no importance_path: a random head
    assert not torch.equal(_head(model)["weight"], head["weight"])

    cfg.fisher.importance_path = str(result.importance_path)
    for spec in (TrialSpec(mask="full"), TrialSpec(mask="linear", seed=3),  # a baseline, another seed
                 TrialSpec(mask="full", ewc_lambda=1.0, gamma=1.0)):           # a Fisher trial
        model, _, penalty = build_model(cfg, spec, checkpoint)
        for name, value in _head(model).items():
            assert torch.equal(value, head[name]), (spec, name)
        if spec.ewc_lambda:
            assert penalty is not None and not any(n.startswith("head") for n in penalty.names)


def test_without_fit_head_the_cache_holds_no_head(env, tmp_path):
    cfg = _cfg(tmp_path, **{"fisher.fit_head": False})
    result = compute_fisher(cfg, env["data"], env["checkpoint"], use_ray=False, log=lambda *_: None)
    assert not (result.directory / "head.pt").exists() and load_fitted_head(result.importance_path) is None
    assert result.meta["head"]["fit_head"] is False


# --------------------------------------------------------------------------- (d) the cache key
def test_head_settings_change_the_cache_key(env, tmp_path):
    data, checkpoint = env["data"], env["checkpoint"]

    def key(**extra):
        return fisher_cache_key(_cfg(tmp_path, **extra), data, checkpoint)

    base = key()
    assert key() == base
    assert key(**{"fisher.head_l2": 0.1}) != base
    assert key(**{"fisher.head_steps": 50}) != base
    assert key(**{"fisher.head_seeds": 2}) != base
    assert key(**{"fisher.head_samples": 20}) != base  # fewer probe rows: other sample ids
    assert key(**{"fisher.fit_head": False}) != base
    # without a head fit its settings decide nothing
    assert key(**{"fisher.fit_head": False, "fisher.head_l2": 0.1}) == key(**{"fisher.fit_head": False})
