"""Acceptance: the embedded benchmark shows the fairness generalisation gap (docs/design.md#the-embedded-synthetic-dataset).

Full fine-tuning of the cached pre-trained micro backbone, on the demo's default data and training
settings (12 epochs, lr 1e-3), fits every group of the training set (worst-group AUC >= 0.95) while
test AUC of the minority is clearly below the majority's.
"""
import pytest

from fairtune_ray.config import load_config
from fairtune_ray.data.loading import load_dataset
from fairtune_ray.training.loop import fine_tune
from fairtune_ray.training.pretrain import resolve_checkpoint
from fairtune_ray.training.spec import TrialSpec

GAP_SETTINGS = {"train.select_epoch": "last", "train.threads": 2}


@pytest.mark.slow
def test_full_finetune_shows_fairness_generalisation_gap(session_cache):
    cfg = load_config(None, overrides={**GAP_SETTINGS, "data.cache_dir": session_cache})
    data = load_dataset(cfg.data)
    ckpt = resolve_checkpoint(cfg, log=lambda *_: None)
    fit = fine_tune(cfg, TrialSpec(mask="full", lr=1e-3, seed=0), data, ckpt, final_splits=("train", "test"))
    train, test = fit.final["train"], fit.final["test"]
    names = data.info.attributes["skin_tone"]
    majority = names[int(data.split("train").manifest.skin_tone.value_counts().idxmax())]
    minority = data.info.extra["minority_group"]
    print(f"train worst-group AUC {train['min_auc']:.3f}; test AUC {majority} {test[f'group/{majority}/auc']:.3f} "
          f"{minority} {test[f'group/{minority}/auc']:.3f}")
    assert train["min_auc"] >= 0.95
    assert test[f"group/{minority}/auc"] <= test[f"group/{majority}/auc"] - 0.05
    assert test["min_auc"] < train["min_auc"] - 0.1
