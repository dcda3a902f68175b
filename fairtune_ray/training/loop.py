"""The inner fine-tune: one loop for every execution path (local, Tune trial, Ray Train worker).

Runs under Hugging Face Accelerate, which picks the device, wraps the model for DDP when the
process group has several workers (Ray Train sets it up) and applies mixed precision on GPUs.
Validation metrics are computed once per epoch over the whole split (never per batch) and handed
to ``on_epoch``, through which the search reports to Ray Tune so ASHA can stop weak trials early.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.utils import set_seed

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.loading import BatchTransform, make_loader, split_tensors
from fairtune_ray.data.manifest import PackedDataset
from fairtune_ray.metrics import compute_metrics, parse_objective
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.training.setup import build_model
from fairtune_ray.training.spec import TrialSpec

EpochCallback = Callable[[int, dict], None]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the trial is failed, not silently continued."""


@dataclass
class SplitScores:
    labels: np.ndarray
    scores: np.ndarray
    groups: np.ndarray


@dataclass
class FitResult:
    spec: TrialSpec
    trainable_params: int
    total_params: int
    best_epoch: int
    best_val: dict
    history: list[dict]
    final: dict[str, dict] = field(default_factory=dict)
    scores: dict[str, SplitScores] = field(default_factory=dict)
    seconds: float = 0.0
    train_samples_per_s: float = 0.0


def resolve_mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def prefixed(metrics: dict, prefix: str) -> dict:
    return {f"{prefix}/{k}": v for k, v in metrics.items()}


@torch.no_grad()
def predict(model: nn.Module, loader, transform: BatchTransform, accelerator: Accelerator) -> SplitScores:
    """Scores for a whole split, gathered across workers (dataset-level metrics need all of them)."""
    model.eval()
    ys, ss, gs = [], [], []
    for images, labels, groups in loader:
        logits = model(transform(images, train=False)).float()
        prob = torch.sigmoid(logits.view(-1))
        prob, labels, groups = accelerator.gather_for_metrics((prob, labels, groups))
        ys.append(labels.cpu()), ss.append(prob.cpu()), gs.append(groups.cpu())
    return SplitScores(torch.cat(ys).numpy(), torch.cat(ss).numpy(), torch.cat(gs).numpy())


def fine_tune(
    cfg: ExperimentConfig,
    spec: TrialSpec,
    data: PackedDataset,
    checkpoint: CheckpointLike = None,
    on_epoch: Optional[EpochCallback] = None,
    final_splits: tuple[str, ...] = ("test",),
    accelerator: Optional[Accelerator] = None,
) -> FitResult:
    """Fine-tune the backbone with ``spec``; keep the best epoch by the validation objective.

    After training, the best epoch's weights are evaluated on ``final_splits`` (e.g. test, train).
    """
    t0 = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available(),
                                             mixed_precision=resolve_mixed_precision(cfg.train.mixed_precision))
    set_seed(spec.seed)
    objective = parse_objective(cfg.train.objective)
    attribute = cfg.data.sensitive_attribute
    group_names = data.info.attributes[attribute]
    epochs = spec.epochs or cfg.train.epochs

    model, trainable, penalty = build_model(cfg, spec, checkpoint, data)
    total = sum(p.numel() for p in model.parameters())
    transform = BatchTransform(model_data_config(model), augment=cfg.data.augment)

    train_split = split_tensors(data, "train", attribute)
    train_loader = make_loader(train_split, cfg.data.batch_size, train=True,
                               group_balanced=cfg.data.group_balanced, seed=spec.seed)
    eval_loaders = {s: make_loader(split_tensors(data, s, attribute), cfg.data.eval_batch_size, train=False)
                    for s in {"val", *final_splits}}

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups_ = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.train.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups_, lr=spec.lr)
    else:
        optimizer = torch.optim.SGD(groups_, lr=spec.lr, momentum=cfg.train.momentum)

    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    eval_loaders = {k: accelerator.prepare(v) for k, v in eval_loaders.items()}
    if penalty is not None:
        penalty = penalty.to(accelerator.device)

    steps_per_epoch = max(1, len(train_loader))
    total_steps = epochs * steps_per_epoch
    warmup = min(int(cfg.train.warmup_epochs * steps_per_epoch), total_steps - 1)
    from timm.scheduler import CosineLRScheduler  # timm's scheduler: warm-up + cosine per step

    scheduler = CosineLRScheduler(optimizer, t_initial=total_steps, lr_min=spec.lr * 0.01, warmup_t=warmup,
                                  warmup_lr_init=spec.lr * 0.01, t_in_epochs=False)
    pos_weight = None
    if cfg.data.class_weights:
        pos = train_split.labels.float().mean().clamp(1e-3, 1 - 1e-3)
        pos_weight = ((1 - pos) / pos).to(accelerator.device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    history: list[dict] = []
    best_value, best_epoch, best_state, best_val = None, -1, None, {}
    step, seen, train_time = 0, 0, 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        te = time.perf_counter()
        loss_sum, n_batches = 0.0, 0
        for images, labels, _groups in train_loader:
            logits = model(transform(images, train=True)).float().view(-1)
            loss = loss_fn(logits, labels.float())
            if penalty is not None:
                loss = loss + penalty(model)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"training loss became {loss.item()} at epoch {epoch}, step {step} "
                                         f"(mask {spec.mask}, lr {spec.lr:g})")
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            scheduler.step_update(step)
            loss_sum += loss.item()
            n_batches += 1
            seen += len(labels)
        train_time += time.perf_counter() - te
        val = predict(model, eval_loaders["val"], transform, accelerator)
        val_metrics = compute_metrics(val.labels, val.scores, val.groups, group_names)
        value = objective.value(val_metrics)
        record = {"epoch": epoch, "train/loss": loss_sum / max(1, n_batches), "lr": optimizer.param_groups[0]["lr"],
                  "objective": value, "trainable_params": trainable, **prefixed(val_metrics, "val")}
        history.append(record)
        if best_value is None or (not math.isnan(value) and (math.isnan(best_value) or objective.better(value, best_value))):
            best_value, best_epoch, best_val = value, epoch, record
            best_state = trainable_state(accelerator.unwrap_model(model))
        if on_epoch is not None:
            on_epoch(epoch, dict(record, best_objective=best_value, best_epoch=best_epoch))

    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None and cfg.train.select_epoch == "best":
        unwrapped.load_state_dict(best_state, strict=False)
    result = FitResult(spec, trainable, total, best_epoch, best_val, history)
    for split in final_splits:
        sc = predict(model, eval_loaders[split], transform, accelerator)
        result.scores[split] = sc
        result.final[split] = compute_metrics(sc.labels, sc.scores, sc.groups, group_names)
    result.scores["val"] = predict(model, eval_loaders["val"], transform, accelerator)
    result.seconds = time.perf_counter() - t0
    result.train_samples_per_s = seen / max(train_time, 1e-9)
    return result


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of what training can change: the trainable parameters only (cheap to keep)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def model_data_config(model: nn.Module) -> dict:
    from fairtune_ray.models import backbone_data_config

    return backbone_data_config(model)
