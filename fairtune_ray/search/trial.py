"""The Ray Tune trial: one inner fine-tune per proposed configuration.

Every epoch's validation metrics go to Tune (``ray.tune.report``) so ASHA can stop weak trials
early, and to the trial's nested MLflow run. The prepared dataset arrives through
``tune.with_parameters``: it is put in the Ray object store once and shared by the trials of a node.
"""
from __future__ import annotations

import os
import traceback
from typing import Optional

import torch
from ray import tune

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.manifest import PackedDataset
from fairtune_ray.search.space import spec_from_trial_config
from fairtune_ray.tracking import ChildRunLogger


def trial_params(spec, space_name: str, trainable: Optional[int] = None) -> dict:
    params = {"mask": spec.mask, "space": space_name if ":" in spec.mask else spec.mask, "lr": spec.lr,
              "seed": spec.seed, "ewc_lambda": spec.ewc_lambda, "gamma": spec.gamma, "rank": spec.rank,
              "factorise": "+".join(spec.factorise) or "none"}
    if trainable is not None:
        params["trainable_params"] = trainable
    return params


def set_trial_threads(cfg: ExperimentConfig) -> None:
    """Use as many torch threads as CPUs the trial was given (Ray also sets OMP_NUM_THREADS)."""
    n = cfg.train.threads or max(1, int(cfg.trial.resources.cpu))
    torch.set_num_threads(n)


def run_trial(config: dict, *, cfg_dict: dict, data: PackedDataset, checkpoint: Optional[str], space_name: str,
              n_bits: int, tracking: Optional[dict] = None) -> None:
    cfg = ExperimentConfig.model_validate(cfg_dict)
    spec = spec_from_trial_config(config, cfg, space_name, n_bits, seed=cfg.train.seed)
    if cfg.trial.workers > 1:
        from fairtune_ray.search.distributed import run_distributed_trial

        return run_distributed_trial(cfg, spec, data, checkpoint, space_name, tracking)
    set_trial_threads(cfg)
    from fairtune_ray.training.loop import fine_tune

    logger = None
    if tracking:
        trial_id = tune.get_context().get_trial_id()
        logger = ChildRunLogger(tracking["uri"], tracking["parent_run_id"], trial_id, spec.short_name(),
                                trial_params(spec, space_name), tags={"fairtune.method": tracking.get("method", "")})

    def on_epoch(epoch: int, record: dict) -> None:
        if logger is not None:
            if epoch == 1:
                logger.client.log_param(logger.run_id, "trainable_params", record["trainable_params"])
            logger.log_epoch(epoch, record)
        tune.report(record)

    try:
        fine_tune(cfg, spec, data, checkpoint, on_epoch=on_epoch, final_splits=())
    except Exception as err:
        if logger is not None:
            logger.finish("failed", reason=f"{type(err).__name__}: {err}\n{traceback.format_exc()[-3000:]}")
        raise
    if logger is not None:
        logger.finish("completed")
