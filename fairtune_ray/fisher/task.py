"""One Fisher computation: draw the training samples, rebuild theta*, compute the per-group Fisher.

It runs in-process or as ONE Ray task (``num_gpus=1`` when the cluster has a GPU); only the drawn
images travel. The model is built as a trial builds it (``create_backbone`` after
``set_seed(train.seed)``); with ``fisher.fit_head`` its fresh head is then fitted by a linear
probe on the frozen backbone (``fisher.head``), so theta* = (pre-trained backbone, fitted head),
the weights a Fisher-method trial starts from. With ``fisher.head_seeds`` > 1 the Fisher is the
mean over that many fitted heads (head 0 is the one trials start from).
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch
from accelerate.utils import set_seed
from torch import Tensor

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.groups import GroupCoding, coding_for
from fairtune_ray.data.loading import BatchTransform, split_tensors
from fairtune_ray.data.manifest import DataError
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.fisher.compute import average_fisher, per_group_fisher, select_group_samples
from fairtune_ray.fisher.head import FittedHead, fit_heads, pooled_features, set_head
from fairtune_ray.models import backbone_data_config, create_backbone
from fairtune_ray.models.shipping import CheckpointLike

__all__ = ["train_subset", "probe_subset", "run_fisher_task"]

#: (uint8 images (n, C, H, W), labels, groups) of one set of drawn training samples.
Samples = tuple[Tensor, Tensor, Tensor]


def _train_rows(data: PackedDataset) -> np.ndarray:
    rows = np.flatnonzero((data.manifest["split"] == "train").to_numpy())
    if rows.size == 0:
        raise DataError("Fisher: the dataset has no 'train' rows")
    return rows


def _rows_subset(data: PackedDataset, rows: np.ndarray) -> PackedDataset:
    return PackedDataset(data.manifest.iloc[rows].reset_index(drop=True), data.images[rows], data.info, data.groups)


def train_subset(cfg: ExperimentConfig, data: PackedDataset) -> tuple[PackedDataset, np.ndarray]:
    """(PackedDataset of the drawn training samples, global row indices), per group.

    Only the manifest is scanned; images are gathered for the drawn rows alone, so a large
    dataset is never copied.
    """
    coding = coding_for(cfg.data.sensitive_attribute, data)
    train_rows = _train_rows(data)
    groups = torch.as_tensor(coding.encode(data.manifest)[train_rows].astype(np.int64))
    picks = select_group_samples(groups, cfg.fisher.samples_per_group, seed=cfg.train.seed)
    rows = np.concatenate([train_rows[idx.numpy()] for _, idx in sorted(picks.items())])
    return _rows_subset(data, rows), rows


def probe_subset(cfg: ExperimentConfig, data: PackedDataset) -> Optional[PackedDataset]:
    """The training rows the head is fitted on (None without ``fisher.fit_head``): all of them, or a
    draw of ``fisher.head_samples`` seeded by ``train.seed`` (why a cap: the images travel to the
    Fisher task and each costs a forward pass)."""
    if not cfg.fisher.fit_head:
        return None
    rows = _train_rows(data)
    if rows.size > cfg.fisher.head_samples:
        rng = np.random.default_rng([int(cfg.train.seed), 0xF15])
        rows = np.sort(rng.choice(rows, size=cfg.fisher.head_samples, replace=False))
    return _rows_subset(data, rows)


def _samples(subset: PackedDataset, attribute: GroupCoding) -> Samples:
    split = split_tensors(subset, "train", attribute)
    return split.image_tensor(), split.labels, split.groups


def _fit(cfg: ExperimentConfig, model: torch.nn.Module, probe: Samples, transform: BatchTransform,
         device: torch.device) -> list[FittedHead]:
    """The fitted heads (head 0 first), on the frozen backbone's features computed once."""
    images, labels, groups = probe
    features = pooled_features(model, images, transform, device)
    f = cfg.fisher
    return fit_heads(model, features, labels, groups, l2=f.head_l2, steps=f.head_steps, n_heads=f.head_seeds,
                     seed=cfg.train.seed, group_balanced=bool(cfg.data.group_balanced),
                     class_weights=cfg.data.class_weights)


def _fisher_task(cfg_dict: dict, fisher_samples: Samples, probe: Optional[Samples],
                 checkpoint: CheckpointLike) -> dict:
    """Per-group Fisher at theta* (averaged over the fitted heads); runs as a Ray task or in-process.
    Returns CPU tensors, and head 0's state under ``"head"`` (None without a head fit)."""
    t0 = time.perf_counter()
    cfg = ExperimentConfig.model_validate(cfg_dict)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    set_seed(cfg.train.seed)  # the same fresh head as a trial with seed train.seed (the probe's start)
    model = create_backbone(cfg.backbone, num_classes=1, checkpoint=checkpoint).to(device)
    transform = BatchTransform(backbone_data_config(model), augment=False)
    t_head = time.perf_counter()
    heads = _fit(cfg, model, probe, transform, device) if probe is not None else []
    t_head = time.perf_counter() - t_head
    images, labels, groups = fisher_samples
    x = transform(images, train=False)
    fishers = []
    for head in heads or [None]:
        if head is not None:
            set_head(model, head.state)
        fishers.append(per_group_fisher(model, x, labels, groups, samples_per_group=cfg.fisher.samples_per_group,
                                        chunk_size=cfg.fisher.chunk_size, seed=cfg.train.seed, device=device))
    return {"fisher": average_fisher(fishers), "head": heads[0].state if heads else None,
            "head_fit": [h.summary() for h in heads], "head_seconds": t_head if heads else 0.0,
            "seconds": time.perf_counter() - t0, "device": str(device),
            "torch_threads": torch.get_num_threads()}


def run_fisher_task(cfg: ExperimentConfig, subset: PackedDataset, checkpoint: CheckpointLike, use_ray: bool,
                    probe: Optional[PackedDataset] = None) -> dict:
    """``{"fisher": {group: {param: F}}, "head", "head_fit", "seconds", "device", "where", ...}`` for the
    drawn samples; the head is fitted on ``probe`` (no fit when None)."""
    attribute = coding_for(cfg.data.sensitive_attribute, subset)  # the whole dataset's, kept by the subset
    args = (cfg.model_dump(), _samples(subset, attribute),
            _samples(probe, attribute) if probe is not None else None, checkpoint)
    if not use_ray:
        return {**_fisher_task(*args), "where": "in-process"}
    import ray  # lazy: Ray only for the Ray task; the in-process path (and `fisher` without --ray) needs none

    gpus = 1 if float(ray.cluster_resources().get("GPU", 0)) >= 1 else 0
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=1)(_fisher_task)
    return {**ray.get(remote.remote(*args)), "where": "ray-task"}
