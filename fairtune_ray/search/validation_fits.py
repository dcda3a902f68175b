"""Fine-tunes judged on validation only, as parallel Ray tasks: the confirmation of the best trials
and the learning-rate choice of the baselines.

The tasks receive the dataset without its test split (``PackedDataset.only``), so no decision taken
before the final test can read a test image; each result says which splits its task was given.
"""
from __future__ import annotations

from typing import Hashable

import numpy as np
import ray

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.training.loop import fine_tune
from fairtune_ray.training.process import prepare_trial_process
from fairtune_ray.training.regime import single_process_regime
from fairtune_ray.training.spec import TrialSpec

#: what a validation-only fine-tune is given
VALIDATION_SPLITS = ("train", "val")


def run_validation_fits(cfg: ExperimentConfig, specs: dict[Hashable, TrialSpec], data: PackedDataset,
                        checkpoint: CheckpointLike) -> dict[Hashable, dict]:
    """Each spec trained on train and scored on validation (best epoch), in parallel Ray tasks that
    reserve what a trial reserves. Returns ``{key: {"objective", "metrics", "best_epoch", ...}}``."""
    if not specs:
        return {}
    remote = ray.remote(num_cpus=cfg.trial.resources.cpu, num_gpus=cfg.trial.resources.gpu, max_retries=1)(
        fit_on_validation)
    data_ref, cfg_dict = ray.put(data.only(VALIDATION_SPLITS)), cfg.model_dump()
    futures = {key: remote.remote(cfg_dict, spec, data_ref, checkpoint) for key, spec in specs.items()}
    return dict(zip(futures, ray.get(list(futures.values()))))


def fit_on_validation(cfg_dict: dict, spec: TrialSpec, data: PackedDataset, checkpoint: CheckpointLike) -> dict:
    """One fine-tune: its best epoch's validation objective and metrics (no final split is scored)."""
    cfg = single_process_regime(ExperimentConfig.model_validate(cfg_dict))  # a multi-worker trial's global batch
    prepare_trial_process(cfg)
    fit = fine_tune(cfg, spec, data, checkpoint, final_splits=())
    metrics = {k[len("val/"):]: float(v) for k, v in fit.best_val.items() if k.startswith("val/")}
    return {"objective": float(fit.best_val.get("objective", np.nan)), "metrics": metrics,
            "best_epoch": fit.best_epoch, "seconds": fit.seconds, "effective_batch_size": fit.effective_batch_size,
            "steps_per_epoch": fit.steps_per_epoch,
            "lr": spec.lr, "seed": spec.seed,
            "splits_given": sorted(data.manifest["split"].unique())}
