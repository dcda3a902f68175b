"""Fit a trial, retrain or Train-worker process to the resources Ray gave it."""
from __future__ import annotations

import gc

import torch

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.config.search import CUDA_CONTEXT_MB

MIB = 1 << 20

SHARE_TOO_SMALL = (
    "trial.resources.gpu={fraction} of this GPU's {total_mib:.0f} MiB is {share_mib:.0f} MiB, not more than "
    "the {context_mb} MiB kept for the CUDA context (trial.resources.cuda_context_mb): give each trial a "
    "larger GPU share or lower cuda_context_mb"
)


def trial_threads(cfg: ExperimentConfig) -> int:
    """torch threads of a trial process: ``train.threads``, or as many as the trial's CPUs."""
    return cfg.train.threads or max(1, int(cfg.trial.resources.cpu))


def set_trial_threads(cfg: ExperimentConfig) -> None:
    """Use as many torch threads as CPUs the trial was given (Ray also sets OMP_NUM_THREADS)."""
    torch.set_num_threads(trial_threads(cfg))


def allocator_cap_bytes(gpu_fraction: float, total_bytes: int, context_mb: int = CUDA_CONTEXT_MB) -> int:
    """Bytes a fractional-GPU process may hold in torch's caching allocator: its share of the GPU minus
    its CUDA context. The context (driver state, loaded kernels) sits outside the allocator, so a cap
    of the bare share would let four 0.25 trials plus their four contexts overrun the card."""
    share = gpu_fraction * total_bytes
    if share <= context_mb * MIB:
        raise ValueError(SHARE_TOO_SMALL.format(fraction=gpu_fraction, total_mib=total_bytes / MIB,
                                                share_mib=share / MIB, context_mb=context_mb))
    return int(share - context_mb * MIB)


def allocator_fraction(gpu_fraction: float, total_bytes: int, context_mb: int = CUDA_CONTEXT_MB,
                       device_bytes: int | None = None) -> float:
    """The cap as the fraction of the device that ``torch.cuda.set_per_process_memory_fraction`` takes:
    ``(gpu_fraction * total - context) / device``. ``device_bytes`` differs from ``total_bytes`` only to
    emulate a smaller card on a bigger one (benchmarks/gpu/gpu_check.py); by default they are the same."""
    device = device_bytes or total_bytes
    return min(1.0, allocator_cap_bytes(gpu_fraction, total_bytes, context_mb) / device)


def cap_gpu_memory(gpu_fraction: float, context_mb: int = CUDA_CONTEXT_MB,
                   share_of_bytes: int | None = None) -> bool:
    """With a fractional GPU (e.g. 0.25 packs 4 trials on one GPU), keep this process within its
    share of the device's memory, its CUDA context included. Ray already restricts CUDA_VISIBLE_DEVICES
    to the assigned GPU, so it is device 0 here. No-op on the CPU or with whole GPUs; returns whether a
    cap was set. ``share_of_bytes``: take the share of this many bytes instead of the device's memory.

    The context is a configured reserve rather than a measurement: free memory before and after CUDA
    starts (``torch.cuda.mem_get_info``) also moves with the other trials starting on the same GPU, and
    NVML's per-process figures need host PIDs, which containers hide."""
    if not (0 < gpu_fraction < 1) or not torch.cuda.is_available():
        return False
    device = torch.cuda.get_device_properties(0).total_memory
    fraction = allocator_fraction(gpu_fraction, share_of_bytes or device, context_mb, device_bytes=device)
    torch.cuda.set_per_process_memory_fraction(fraction, device=0)
    return True


def prepare_trial_process(cfg: ExperimentConfig) -> None:
    """Threads = the trial's CPUs; with a fractional GPU, CUDA memory capped at its share."""
    set_trial_threads(cfg)
    cap_gpu_memory(cfg.trial.resources.gpu, cfg.trial.resources.cuda_context_mb)


def release_trial_memory() -> None:
    """At the end of a trial, in a process Ray Tune may reuse for the next one (``search.reuse_actors``):
    collect the finished trial's model, optimizer and batches, and hand the CUDA cache back so that the
    next trial on a shared GPU starts from an empty allocator."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
