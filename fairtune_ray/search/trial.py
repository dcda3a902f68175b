"""The Ray Tune trial: one inner fine-tune per proposed configuration.

Every epoch's validation metrics go to Tune (``ray.tune.report``) so ASHA can stop weak trials
early, and to the trial's nested MLflow run. The prepared dataset arrives as a ``SharedDataset``
(search/shared_data.py): one object-store copy shared by the trials of a node and their workers.
Ray Tune reuses a trial's process for the next trial (``search.reuse_actors``, on by default): all
per-trial state is set here or in ``fine_tune`` at the start of each trial, never at import.
A trial with ``trial.workers > 1`` drives a Ray Train ``TorchTrainer`` instead (``search.distributed``).
"""
from __future__ import annotations

from typing import Optional

from ray import tune

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.search.child_run import failure_reason, open_child_run
from fairtune_ray.search.distributed import run_distributed_trial
from fairtune_ray.search.epoch_hook import load_epoch_hook
from fairtune_ray.search.shared_data import DatasetArg, resolve
from fairtune_ray.search.space import spec_from_trial_config
from fairtune_ray.search.tune_value import BestSoFar
from fairtune_ray.training.loop import fine_tune
from fairtune_ray.training.process import prepare_trial_process, release_trial_memory


def run_trial(config: dict, *, cfg_dict: dict, data: DatasetArg, checkpoint: CheckpointLike, space_name: str,
              n_bits: int, tracking: Optional[dict] = None) -> None:
    cfg = ExperimentConfig.model_validate(cfg_dict)
    spec = spec_from_trial_config(config, cfg, space_name, n_bits, seed=cfg.train.seed)
    if cfg.trial.workers > 1:
        return run_distributed_trial(cfg, spec, data, checkpoint, space_name, tracking)
    prepare_trial_process(cfg)
    data = resolve(data)
    logger = open_child_run(tracking, tune.get_context().get_trial_id(), spec, space_name) if tracking else None
    trial_dir = tune.get_context().get_trial_dir()
    hook = load_epoch_hook()
    best_so_far = BestSoFar(cfg)

    def on_epoch(epoch: int, record: dict) -> None:
        if hook is not None:
            hook(epoch=epoch, spec=spec, trial_dir=trial_dir, rank=0)
        if logger is not None:
            if epoch == 1:
                for key in ("trainable_params", "effective_batch_size", "adapted_modules"):
                    logger.client.log_param(logger.run_id, key, record[key])
            logger.log_epoch(epoch, record)
        tune.report(best_so_far(record))

    try:
        fine_tune(cfg, spec, data, checkpoint, on_epoch=on_epoch, final_splits=())
    except Exception as err:
        if logger is not None:
            logger.finish("failed", reason=failure_reason(err))
        raise
    finally:
        release_trial_memory()  # the process may serve the next trial (search.reuse_actors)
    if logger is not None:
        logger.finish("completed")
