"""The training regime a configuration was judged in, reproduced in one process.

A multi-worker trial (``trial.workers: N``) trains under DDP: each worker draws ``data.batch_size``
images per step, gradients are averaged, so the optimiser sees a global batch of N x batch_size and
takes 1/N of the steps per epoch. The learning rate the search picks belongs to that regime. A retrain
or a validation fit of that configuration runs in one process with the same global batch (hence the
same steps per epoch and learning-rate schedule), not with the per-worker batch.
"""
from __future__ import annotations

from fairtune_ray.config import ExperimentConfig


def effective_batch_size(cfg: ExperimentConfig, processes: int = 1) -> int:
    """Images per optimiser step: the per-process batch times the processes that train together."""
    return cfg.data.batch_size * processes


def single_process_regime(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` for one process that trains as its multi-worker trials did (same global batch)."""
    if cfg.trial.workers <= 1:
        return cfg
    data = cfg.data.model_copy(update={"batch_size": effective_batch_size(cfg, cfg.trial.workers)})
    trial = cfg.trial.model_copy(update={"workers": 1})
    return cfg.model_copy(update={"data": data, "trial": trial})
