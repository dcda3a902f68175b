"""Checks that must fail before any Ray process starts, with the config key that is at fault."""
from __future__ import annotations

import os

import torch

from fairtune_ray.config import ConfigError, ExperimentConfig
from fairtune_ray.models import MaskSpaceError, create_backbone, get_space


def structure_model(cfg: ExperimentConfig):
    """The backbone's module structure without downloading weights (mask spaces need only names)."""
    shape_only = cfg.backbone.model_copy(update={"pretrained": False, "checkpoint": None})
    return create_backbone(shape_only, num_classes=1)


def check_mask_space(cfg: ExperimentConfig, model=None):
    model = model if model is not None else structure_model(cfg)
    try:
        return get_space(cfg.mask.space, model)
    except MaskSpaceError as err:
        raise ConfigError(f"mask.space: {err}") from None


def check_resources(cfg: ExperimentConfig, cluster_address: str | None = None) -> None:
    """A fractional GPU request on a machine without GPUs would leave trials pending forever."""
    gpu = cfg.trial.resources.gpu
    if gpu > 0 and not cluster_address and torch.cuda.device_count() == 0:
        raise ConfigError(
            f"trial.resources.gpu: {gpu} GPU per trial was requested, but this machine has no GPU "
            "(torch.cuda.device_count() == 0); set `gpu: 0` to run the trials on the CPU")
    if 0 < gpu < 1 and cfg.trial.workers > 1:
        raise ConfigError("trial.resources.gpu: a multi-worker trial (trial.workers > 1) needs whole GPUs per worker")
    if gpu > 1 and gpu != int(gpu):
        raise ConfigError(f"trial.resources.gpu: {gpu} is neither a fraction below 1 nor a whole number")


def preflight(cfg: ExperimentConfig, cluster_address: str | None = None):
    """Run every check; return the mask space (needed to build the search space)."""
    check_resources(cfg, cluster_address or os.environ.get("RAY_ADDRESS"))
    return check_mask_space(cfg)
