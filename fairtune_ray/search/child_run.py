"""A trial's nested MLflow run, opened from inside the trial process and tagged with its node."""
from __future__ import annotations

import os
import traceback
from typing import Optional

import ray

from fairtune_ray.models.adapters import peft_method
from fairtune_ray.tracking import ChildRunLogger
from fairtune_ray.training.spec import TrialSpec


def trial_params(spec: TrialSpec, space_name: str, trainable: Optional[int] = None) -> dict:
    params = {"mask": spec.mask, "space": space_name if ":" in spec.mask else spec.mask, "lr": spec.lr,
              "seed": spec.seed, "ewc_lambda": spec.ewc_lambda, "gamma": spec.gamma, "rank": spec.rank,
              "factorise": "+".join(spec.factorise) or "none", **peft_params(spec)}
    if trainable is not None:
        params["trainable_params"] = trainable
    return params


def peft_params(spec: TrialSpec) -> dict:
    """The PEFT method and its settings ('mask' and 'none' without adapters; rank and alpha only where the
    method reads them). The count of adapted layers is logged at the first epoch (``adapted_modules``)."""
    method = spec.peft_method
    if not method:
        return {"peft": "mask", "peft_targets": "none"}
    params = {"peft": method, "peft_targets": "+".join(spec.peft_targets)}
    if peft_method(method).uses_rank:
        alpha = spec.peft_alpha if spec.peft_alpha is not None else spec.peft_rank
        params.update(peft_rank=spec.peft_rank, peft_alpha=alpha)
    return params


def node_info() -> dict:
    """Where this process runs: Ray node id (distinct per node even on one machine) and IP."""
    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "process": str(os.getpid())}


def open_child_run(tracking: dict, trial_id: str, spec: TrialSpec, space_name: str,
                   tags: Optional[dict] = None) -> ChildRunLogger:
    """The trial's nested MLflow run, tagged with the node it runs on. Tagged on every attempt: a
    retried trial may run on another node (the logger finds the run of an earlier attempt)."""
    logger = ChildRunLogger(tracking["uri"], tracking["parent_run_id"], trial_id, spec.short_name(),
                            trial_params(spec, space_name),
                            tags={"fairtune.method": tracking.get("method", ""), **(tags or {})})
    here = node_info()
    logger.client.set_tag(logger.run_id, "node", here["node_id"])
    logger.client.set_tag(logger.run_id, "node_ip", here["node_ip"])
    logger.client.set_tag(logger.run_id, "process", here["process"])  # one process serves many trials (reuse_actors)
    return logger


def failure_reason(err: BaseException) -> str:
    """What a failed child run records: the error and the end of its traceback."""
    return f"{type(err).__name__}: {err}\n{traceback.format_exc()[-3000:]}"
