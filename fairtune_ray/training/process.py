"""Fit a trial, retrain or Train-worker process to the resources Ray gave it."""
from __future__ import annotations

import torch

from fairtune_ray.config import ExperimentConfig


def trial_threads(cfg: ExperimentConfig) -> int:
    """torch threads of a trial process: ``train.threads``, or as many as the trial's CPUs."""
    return cfg.train.threads or max(1, int(cfg.trial.resources.cpu))


def set_trial_threads(cfg: ExperimentConfig) -> None:
    """Use as many torch threads as CPUs the trial was given (Ray also sets OMP_NUM_THREADS)."""
    torch.set_num_threads(trial_threads(cfg))


def cap_gpu_memory(gpu_fraction: float) -> bool:
    """With a fractional GPU (e.g. 0.25 packs 4 trials on one GPU), keep this process within its
    share of the device's memory. Ray already restricts CUDA_VISIBLE_DEVICES to the assigned GPU, so
    it is device 0 here. No-op on the CPU or with whole GPUs; returns whether a cap was set."""
    if not (0 < gpu_fraction < 1) or not torch.cuda.is_available():
        return False
    torch.cuda.set_per_process_memory_fraction(float(gpu_fraction), device=0)
    return True


def prepare_trial_process(cfg: ExperimentConfig) -> None:
    """Threads = the trial's CPUs; with a fractional GPU, CUDA memory capped at its share."""
    set_trial_threads(cfg)
    cap_gpu_memory(cfg.trial.resources.gpu)
