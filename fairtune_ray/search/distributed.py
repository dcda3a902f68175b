"""Multi-worker trials (``trial.workers: N > 1``): a Ray Train V2 ``TorchTrainer`` per Tune trial.

A multi-worker trial is still one Ray Tune function trial, but it only drives: it builds and fits a
Ray Train (V2) ``TorchTrainer`` with N workers. Every worker runs the same inner loop
(``training.loop.fine_tune``) under Accelerate, which finds the process group Ray Train set up
(gloo on CPU, NCCL on GPU) and wraps the model in DDP; validation scores are gathered across
workers, so every rank sees the same dataset-level metrics. Every rank calls ``ray.train.report``
each epoch (Train V2 requires all ranks to report); Train's ``TuneReportCallback`` forwards rank
0's record to Tune, so ASHA sees one result per epoch exactly as for a single-worker trial. Rank 0
alone writes the epoch metrics to the trial's MLflow child run; the trial function opens and closes
that run (so a failure of the worker group is still recorded).

Ray Train V2 is the default in Ray >= 2.50 (``RAY_TRAIN_V2_ENABLED`` unset or 1); this module
refuses to run under V1, whose Tune integration is different.
"""
from __future__ import annotations

import logging
import threading
from typing import Optional

import ray
from accelerate import Accelerator
from mlflow.tracking import MlflowClient
from ray import tune
from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2._internal.constants import is_v2_enabled
from ray.train.v2._internal.execution.callback import WorkerGroupCallback
from ray.tune.integration.ray_train import TuneReportCallback
from ray.util.placement_group import remove_placement_group

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.search.child_run import failure_reason, node_info, open_child_run
from fairtune_ray.search.epoch_hook import load_epoch_hook
from fairtune_ray.search.shared_data import DatasetArg, shared
from fairtune_ray.search.tune_value import BestSoFar
from fairtune_ray.tracking.mlflow_runs import log_metrics
from fairtune_ray.training.loop import accelerator_options, fine_tune
from fairtune_ray.training.process import set_trial_threads
from fairtune_ray.training.spec import TrialSpec


def _train_storage() -> dict:
    """Put the Train run's folder inside the Tune trial's folder (same filesystem: local or S3)."""
    try:  # optional: an internal Ray Train API (no public accessor for the trial's storage)
        from ray.train._internal.session import get_session

        storage = get_session().storage
        return {"storage_path": f"{storage.trial_fs_path}/train_run",
                "storage_filesystem": storage.storage_filesystem}
    except Exception:  # outside a Tune session (direct calls in tests): Ray's default folder
        return {}


@ray.remote(num_cpus=0, max_concurrency=4)
class PlacementGroupReaper:
    """Removes a multi-worker trial's worker-group placement group once the trial's actor is gone.

    When Tune stops a trial (ASHA, the last epoch, a failure) it kills the trial actor while
    ``TorchTrainer.fit`` is still inside; the Train controller and workers die with it, but the
    workers' placement group belongs to the job and would keep its CPUs/GPUs reserved. Ray Train's
    own cleaner finds out through the state API, which needs the dashboard and a single Ray instance
    per machine; this detached helper only watches the trial actor, so it works without either.
    """

    def __init__(self, owner):
        self._owner = owner
        self._pgs: list = []
        self._done = threading.Event()

    def register(self, pg) -> None:
        self._pgs.append(pg)

    def stop(self) -> None:
        self._done.set()

    def watch(self, poll_s: float = 1.0) -> None:
        ref, owner_gone = self._owner.__ray_ready__.remote(), False
        while not self._done.is_set():
            ready, _ = ray.wait([ref], timeout=poll_s)
            if not ready:
                continue  # the trial actor is busy (Tune's train() waits for the next report)
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                owner_gone = True
                break
            except Exception:
                pass
            self._done.wait(poll_s)
            ref = self._owner.__ray_ready__.remote()
        if owner_gone:
            for pg in self._pgs:
                try:
                    remove_placement_group(pg)
                except Exception:  # already removed by the Train controller or Ray's cleaner
                    pass
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


class RegisterPlacementGroup(WorkerGroupCallback):
    """A Train controller callback that hands each new worker group's placement group to the reaper."""

    def __init__(self, reaper_handle):
        self.reaper = reaper_handle

    def after_worker_group_start(self, worker_group) -> None:
        pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
        ray.get(self.reaper.register.remote(pg))


def start_reaper():
    """A detached reaper on the head node watching the calling (trial) actor; None outside an actor."""
    me = ray.get_runtime_context().current_actor if ray.get_runtime_context().get_actor_id() else None
    if me is None:
        return None
    reaper = PlacementGroupReaper.options(lifetime="detached", resources={"node:__internal_head__": 0.001},
                                          scheduling_strategy="DEFAULT").remote(me)  # not in the trial's group
    reaper.watch.remote()
    return reaper


def scaling_config(cfg: ExperimentConfig) -> ScalingConfig:
    res = cfg.trial.resources
    per_worker = {"CPU": float(res.cpu)}
    if res.gpu > 0:
        per_worker["GPU"] = float(res.gpu)
    return ScalingConfig(num_workers=cfg.trial.workers, use_gpu=res.gpu > 0, resources_per_worker=per_worker)


def run_distributed_trial(cfg: ExperimentConfig, spec: TrialSpec, data: DatasetArg, checkpoint: CheckpointLike,
                          space_name: str, tracking: Optional[dict]) -> None:
    """The Tune function body of a multi-worker trial: fit a TorchTrainer, forward metrics to Tune."""
    if not is_v2_enabled():
        raise RuntimeError("multi-worker trials need Ray Train V2: unset RAY_TRAIN_V2_ENABLED or set it to 1")
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    logger = (open_child_run(tracking, trial_id, spec, space_name, tags={"fairtune.workers": str(cfg.trial.workers)})
              if tracking else None)
    loop_config = {
        "cfg": cfg.model_dump(), "spec": spec.to_dict(), "checkpoint": checkpoint,
        # The study's one stored copy (or, given a dataset, one put here); workers on any node fetch it.
        "data": shared(data),
        "tracking_uri": tracking["uri"] if tracking else None, "run_id": logger.run_id if logger else None,
        "trial_dir": ctx.get_trial_dir(),
    }
    reaper = start_reaper()
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if cfg.trial.resources.gpu > 0 else "gloo"),
        scaling_config=scaling_config(cfg),
        # Retries are Tune's job (search.max_failures): a failed worker group fails the trial.
        run_config=RunConfig(name=f"train_{trial_id}",
                             callbacks=[TuneReportCallback()] + ([RegisterPlacementGroup(reaper)] if reaper else []),
                             failure_config=FailureConfig(max_failures=0),
                             logging_config=LoggingConfig(log_level="WARNING"),  # not every report's full dict
                             **_train_storage()),
    )
    try:
        trainer.fit()
    except ray.exceptions.RayActorError:
        # The Train controller lives in this trial's placement group: Tune is tearing the trial down
        # (ASHA stop, last epoch, or this node is going away). Not a failure of the trial: the
        # driver records the final status; the reaper frees the workers' placement group.
        raise
    except Exception as err:
        if logger is not None:
            logger.finish("failed", reason=failure_reason(err))
        raise
    if reaper is not None:
        reaper.stop.remote()  # fit returned: the controller removed its placement group itself
    if logger is not None:
        logger.finish("completed")


def _quiet_train_reports() -> None:
    """Ray Train logs every report's whole metrics dict at INFO on a logger named by its file path,
    which ``LoggingConfig`` does not reach; keep the console readable."""
    try:  # optional: an internal module of Ray Train, absent in other Ray versions
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except Exception:
        pass


def _worker_loop(config: dict) -> None:
    """Runs on each Ray Train worker: the inner loop under Accelerate, reporting every epoch."""
    _quiet_train_reports()
    cfg = ExperimentConfig.model_validate(config["cfg"])
    spec = TrialSpec(**config["spec"])
    set_trial_threads(cfg)
    data = config["data"].get()
    # Ray Train has initialised torch.distributed and set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*;
    # Accelerate's state picks that process group up (MULTI_CPU with gloo, MULTI_GPU with NCCL).
    accelerator = Accelerator(**accelerator_options(cfg))
    rank = accelerator.process_index
    client = MlflowClient(config["tracking_uri"]) if rank == 0 and config.get("run_id") else None
    here = node_info()
    if client is not None:
        client.set_tag(config["run_id"], "rank0_node", here["node_id"])
    hook = load_epoch_hook()
    best_so_far = BestSoFar(cfg)

    def on_epoch(epoch: int, record: dict) -> None:
        if hook is not None:
            hook(epoch=epoch, spec=spec, trial_dir=config.get("trial_dir"), rank=rank)
        record = best_so_far(dict(record, world_size=accelerator.num_processes))
        if client is not None:
            if epoch == 1:
                for key in ("trainable_params", "effective_batch_size", "adapted_modules"):
                    client.log_param(config["run_id"], key, record[key])
            log_metrics(client, config["run_id"], record, step=epoch)
        ray.train.report(dict(record, node_id=here["node_id"]))  # every rank: Train V2 syncs on report

    fine_tune(cfg, spec, data, config.get("checkpoint"), on_epoch=on_epoch, final_splits=(), accelerator=accelerator)
