"""The Ray Tune trial: one inner fine-tune per proposed configuration.

Every epoch's validation metrics go to Tune (``ray.tune.report``) so ASHA can stop weak trials
early, and to the trial's nested MLflow run. The prepared dataset arrives through
``tune.with_parameters``: it is put in the Ray object store once and shared by the trials of a node.
"""
from __future__ import annotations

import os
import traceback
from fnmatch import fnmatch
from pathlib import Path
from typing import Optional

import torch
from ray import tune

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.manifest import PackedDataset
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.search.space import spec_from_trial_config
from fairtune_ray.tracking import ChildRunLogger

FAULT_ENV = "FAIRTUNE_FAULT_INJECT"


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


def prepare_trial_process(cfg: ExperimentConfig) -> None:
    """Fit a trial or retrain process to its Ray resources: torch threads = its CPUs, and with a
    fractional GPU, CUDA memory capped at its share."""
    from fairtune_ray.search.distributed import cap_gpu_memory

    set_trial_threads(cfg)
    cap_gpu_memory(cfg.trial.resources.gpu)


def open_child_run(tracking: dict, trial_id: str, spec, space_name: str, tags: Optional[dict] = None) -> ChildRunLogger:
    """The trial's nested MLflow run, tagged with the node it runs on. Tagged on every attempt: a
    retried trial may run on another node (the logger finds the run of an earlier attempt)."""
    from fairtune_ray.search.distributed import node_info

    logger = ChildRunLogger(tracking["uri"], tracking["parent_run_id"], trial_id, spec.short_name(),
                            trial_params(spec, space_name),
                            tags={"fairtune.method": tracking.get("method", ""), **(tags or {})})
    here = node_info()
    logger.client.set_tag(logger.run_id, "node", here["node_id"])
    logger.client.set_tag(logger.run_id, "node_ip", here["node_ip"])
    return logger


def inject_fault(epoch: int, spec, trial_dir: Optional[str] = None, rank: int = 0) -> None:
    """TEST-ONLY fault injection, read from $FAIRTUNE_FAULT_INJECT (unset in normal use).

    Rules separated by ';', each ``KIND@epochN[:COND]...``: KIND is ``nan`` (raises the loop's
    NonFiniteLossError, as a diverged loss does) or ``raise`` (a RuntimeError); it fires at the end
    of epoch N, before that epoch is reported. Conditions: ``lr>X``, ``lr<X``, ``bits=GLOB`` (the
    mask bits, fnmatch), ``rank=K`` (Train worker rank), ``once`` (first attempt of the trial only,
    remembered by a marker file in the trial folder). E.g. ``nan@epoch2:lr>1e-3;raise@epoch1:bits=0*:once``.
    """
    rules = os.environ.get(FAULT_ENV, "")
    for i, rule in enumerate(r.strip() for r in rules.split(";")):
        if not rule:
            continue
        head, *conds = rule.split(":")
        kind, _, at = head.partition("@")
        if kind not in ("nan", "raise") or not at.startswith("epoch"):
            raise ValueError(f"{FAULT_ENV}: cannot parse rule '{rule}' (expected nan|raise@epochN[:cond...])")
        if int(at[len("epoch"):]) != epoch:
            continue
        fire, once = True, False
        for c in conds:
            if c == "once":
                once = True
            elif c.startswith(("lr>", "lr<")):
                fire &= spec.lr > float(c[3:]) if c[2] == ">" else spec.lr < float(c[3:])
            elif c.startswith("bits="):
                fire &= fnmatch(spec.mask.split(":")[-1], c[5:])
            elif c.startswith("rank="):
                fire &= rank == int(c[5:])
            else:
                raise ValueError(f"{FAULT_ENV}: unknown condition '{c}' in rule '{rule}'")
        if not fire:
            continue
        if once:
            marker = Path(trial_dir or ".") / f".fault_injected_{i}"
            if marker.exists():
                continue
            marker.touch()
        if kind == "nan":
            from fairtune_ray.training.loop import NonFiniteLossError

            raise NonFiniteLossError(f"training loss became nan at epoch {epoch} (injected by {FAULT_ENV})")
        raise RuntimeError(f"fault injected by {FAULT_ENV} at epoch {epoch}")


def run_trial(config: dict, *, cfg_dict: dict, data: PackedDataset, checkpoint: CheckpointLike, space_name: str,
              n_bits: int, tracking: Optional[dict] = None) -> None:
    cfg = ExperimentConfig.model_validate(cfg_dict)
    spec = spec_from_trial_config(config, cfg, space_name, n_bits, seed=cfg.train.seed)
    if cfg.trial.workers > 1:
        from fairtune_ray.search.distributed import run_distributed_trial

        return run_distributed_trial(cfg, spec, data, checkpoint, space_name, tracking)
    from fairtune_ray.training.loop import fine_tune

    prepare_trial_process(cfg)
    logger = open_child_run(tracking, tune.get_context().get_trial_id(), spec, space_name) if tracking else None
    trial_dir = tune.get_context().get_trial_dir()

    def on_epoch(epoch: int, record: dict) -> None:
        inject_fault(epoch, spec, trial_dir)
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
