"""One Fisher computation: draw the training samples, rebuild theta*, compute the per-group Fisher.

It runs in-process or as ONE Ray task (``num_gpus=1`` when the cluster has a GPU); only the drawn
images travel. The model is built exactly as a trial builds it (``create_backbone`` after
``set_seed(train.seed)``), so theta* - the fresh head included - is the weights a trial with that
seed starts from.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from accelerate.utils import set_seed
from torch import Tensor

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.loading import BatchTransform, split_tensors
from fairtune_ray.data.manifest import DataError
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.fisher.compute import per_group_fisher, select_group_samples
from fairtune_ray.models import backbone_data_config, create_backbone
from fairtune_ray.models.shipping import CheckpointLike

__all__ = ["train_subset", "run_fisher_task"]


def train_subset(cfg: ExperimentConfig, data: PackedDataset) -> tuple[PackedDataset, np.ndarray]:
    """(PackedDataset of the drawn training samples, global row indices), per group.

    Only the manifest is scanned; images are gathered for the drawn rows alone, so a large
    dataset is never copied.
    """
    attribute = cfg.data.sensitive_attribute
    manifest = data.manifest
    train_rows = np.flatnonzero((manifest["split"] == "train").to_numpy())
    if train_rows.size == 0:
        raise DataError("Fisher: the dataset has no 'train' rows")
    groups = torch.as_tensor(manifest[attribute].to_numpy()[train_rows].astype(np.int64))
    picks = select_group_samples(groups, cfg.fisher.samples_per_group, seed=cfg.train.seed)
    rows = np.concatenate([train_rows[idx.numpy()] for _, idx in sorted(picks.items())])
    subset = PackedDataset(manifest.iloc[rows].reset_index(drop=True), data.images[rows], data.info)
    return subset, rows


def _fisher_task(cfg_dict: dict, images: Tensor, labels: Tensor, groups: Tensor,
                 checkpoint: CheckpointLike) -> dict:
    """Per-group Fisher at theta*; runs as a Ray task or in-process. Returns CPU tensors."""
    t0 = time.perf_counter()
    cfg = ExperimentConfig.model_validate(cfg_dict)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    set_seed(cfg.train.seed)  # the same head init as a trial with seed train.seed
    model = create_backbone(cfg.backbone, num_classes=1, checkpoint=checkpoint).to(device)
    x = BatchTransform(backbone_data_config(model), augment=False)(images, train=False)
    fisher = per_group_fisher(model, x, labels, groups, samples_per_group=cfg.fisher.samples_per_group,
                              chunk_size=cfg.fisher.chunk_size, seed=cfg.train.seed, device=device)
    return {"fisher": fisher, "seconds": time.perf_counter() - t0, "device": str(device),
            "torch_threads": torch.get_num_threads()}


def run_fisher_task(cfg: ExperimentConfig, subset: PackedDataset, checkpoint: CheckpointLike, use_ray: bool) -> dict:
    """``{"fisher": {group: {param: F}}, "seconds", "device", "where", ...}`` for the drawn samples."""
    split = split_tensors(subset, "train", cfg.data.sensitive_attribute)
    args = (cfg.model_dump(), split.image_tensor(), split.labels, split.groups, checkpoint)
    if not use_ray:
        return {**_fisher_task(*args), "where": "in-process"}
    import ray  # lazy: Ray only for the Ray task; the in-process path (and `fisher` without --ray) needs none

    gpus = 1 if float(ray.cluster_resources().get("GPU", 0)) >= 1 else 0
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=1)(_fisher_task)
    return {**ray.get(remote.remote(*args)), "where": "ray-task"}
