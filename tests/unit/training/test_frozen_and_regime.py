"""Frozen means frozen (norm statistics, best-epoch buffers); retrains keep a multi-worker trial's regime."""
from __future__ import annotations

import math

import torch

from fairtune_ray.config import load_config
from fairtune_ray.data.loading import load_dataset
from fairtune_ray.export.capture import ModelKeepingAccelerator
from fairtune_ray.models import create_backbone
from fairtune_ray.search.stages.retrain_test import _retrain
from fairtune_ray.search.validation_fits import fit_on_validation
from fairtune_ray.training.loop import fine_tune, trainable_state
from fairtune_ray.training.regime import single_process_regime
from fairtune_ray.training.spec import TrialSpec

RESNET = {"backbone.name": "resnet10t", "backbone.pretrained": False, "backbone.image_size": 32,
          "mask.space": "stage", "train.epochs": 1, "train.select_epoch": "last"}


def _bn_stats(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers() if n.startswith(prefix) and "running_" in n}


def test_frozen_resnet_stages_keep_their_batchnorm_statistics(tiny_overrides):
    cfg = load_config(None, overrides={**tiny_overrides, **RESNET})
    data = load_dataset(cfg.data)
    accelerator = ModelKeepingAccelerator.for_config(cfg)
    initial = create_backbone(cfg.backbone, num_classes=1)  # BatchNorm statistics start at mean 0, var 1
    fine_tune(cfg, TrialSpec(mask="stage:0001", lr=1e-3), data, final_splits=(), accelerator=accelerator)
    trained = accelerator.trained_model()
    for stage in ("layer1", "layer2", "layer3"):  # frozen: statistics as initialised
        before, after = _bn_stats(initial, stage), _bn_stats(trained, stage)
        assert before and all(torch.equal(before[n], after[n]) for n in before), stage
    before, after = _bn_stats(initial, "layer4"), _bn_stats(trained, "layer4")
    assert any(not torch.equal(before[n], after[n]) for n in before)  # trained: statistics updated


def test_the_best_epoch_state_holds_buffers():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model[0].requires_grad_(False)
    state = trainable_state(model)
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked", "1.weight"} <= set(state)
    assert "0.weight" not in state


def test_a_two_worker_configuration_is_judged_and_retrained_with_its_global_batch(tiny_overrides):
    cfg = load_config(None, overrides={**tiny_overrides, "trial.workers": 2, "data.batch_size": 16, "train.epochs": 1})
    single = single_process_regime(cfg)
    assert (single.data.batch_size, single.trial.workers) == (32, 1)
    data = load_dataset(cfg.data)
    out = fit_on_validation(cfg.model_dump(), TrialSpec(mask="linear", lr=1e-3), data.only(("train", "val")), None)
    n_train = int((data.manifest["split"] == "train").sum())
    assert out["effective_batch_size"] == 32
    assert out["steps_per_epoch"] == math.ceil(n_train / 32)
    retrained = _retrain(cfg.model_dump(), TrialSpec(mask="linear", lr=1e-3), data, None)
    assert (retrained["effective_batch_size"], retrained["steps_per_epoch"]) == (32, math.ceil(n_train / 32))
