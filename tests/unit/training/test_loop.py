"""The inner fine-tune loop on the tiny synthetic experiment (CPU, seconds)."""
import math

import pytest

from fairtune_ray.data.loading import load_dataset
from fairtune_ray.models import Mask, apply_mask, create_backbone
from fairtune_ray.training.loop import NonFiniteLossError, fine_tune
from fairtune_ray.training.pretrain import resolve_checkpoint
from fairtune_ray.training.spec import TrialSpec


@pytest.fixture
def setup(tiny_cfg):
    return tiny_cfg, load_dataset(tiny_cfg.data), resolve_checkpoint(tiny_cfg, log=lambda *_: None)


def test_reports_every_epoch_and_keeps_best(setup):
    cfg, data, ckpt = setup
    seen = []
    fit = fine_tune(cfg, TrialSpec(mask="attn_mlp_norm:" + "0" * 15 + "111", lr=1e-3), data, ckpt,
                    on_epoch=lambda e, m: seen.append((e, m)), final_splits=("test",))
    assert [e for e, _ in seen] == [1, 2]
    rec = seen[-1][1]
    for key in ("val/min_auc", "val/overall_auc", "val/auc_gap", "val/group/dark/auc", "objective", "train/loss"):
        assert key in rec
    assert rec["objective"] == rec["val/min_auc"] or math.isnan(rec["objective"])
    values = [m["objective"] for _, m in seen]
    assert fit.best_val["objective"] == max(values)
    assert fit.best_epoch == values.index(max(values)) + 1
    assert "test" in fit.final and len(fit.scores["test"].labels) == (data.manifest.split == "test").sum()


def test_trainable_count_matches_mask(setup):
    cfg, data, ckpt = setup
    fit = fine_tune(cfg, TrialSpec(mask="linear", lr=1e-3, epochs=1), data, ckpt, final_splits=())
    model = create_backbone(cfg.backbone, num_classes=1)
    assert fit.trainable_params == apply_mask(model, Mask.parse("linear")) == 97  # head: 96 weights + bias


def test_non_finite_loss_fails_the_run(setup):
    cfg, data, ckpt = setup
    with pytest.raises(NonFiniteLossError, match="loss became"):
        fine_tune(cfg, TrialSpec(mask="full", lr=1e12, epochs=2), data, ckpt, final_splits=())


def test_seeded_runs_are_reproducible(setup):
    cfg, data, ckpt = setup
    a = fine_tune(cfg, TrialSpec(mask="bitfit", lr=1e-3, epochs=1, seed=3), data, ckpt, final_splits=())
    b = fine_tune(cfg, TrialSpec(mask="bitfit", lr=1e-3, epochs=1, seed=3), data, ckpt, final_splits=())
    assert a.history[0]["train/loss"] == pytest.approx(b.history[0]["train/loss"], rel=1e-6)


def test_lcb_mode_reports_the_bootstrap_bound_each_epoch(setup):
    cfg, data, ckpt = setup
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"tune_value": "lcb"})})
    seen = []
    fine_tune(cfg, TrialSpec(mask="linear", lr=1e-3, epochs=1), data, ckpt, on_epoch=lambda e, m: seen.append(m),
              final_splits=())
    rec = seen[0]
    assert rec["objective_lcb"] <= rec["objective"] or math.isnan(rec["objective"])


def test_the_lora_baseline_trains_its_adapters(setup):
    """Adapters from peft train (their best epoch is restored by name) and the record counts them."""
    cfg, data, ckpt = setup
    seen = []
    fit = fine_tune(cfg, TrialSpec(mask="lora", lr=1e-3, epochs=1), data, ckpt, final_splits=(),
                    on_epoch=lambda e, m: seen.append(m))
    assert fit.trainable_params == seen[0]["trainable_params"] == 36961  # rank 4 in 24 linears + head
    assert seen[0]["adapted_modules"] == 24
    masked = fine_tune(cfg, TrialSpec(mask="linear", lr=1e-3, epochs=1), data, ckpt, final_splits=(),
                       on_epoch=lambda e, m: seen.append(m))
    assert masked.trainable_params == 97 and seen[-1]["adapted_modules"] == 0
