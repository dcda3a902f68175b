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
from torch.nn.modules.batchnorm import _NormBase
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from timm.scheduler import CosineLRScheduler

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.groups import coding_for
from fairtune_ray.data.loading import BatchTransform, make_loader, split_tensors
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.metrics import compute_metrics, objective_bound, parse_objective
from fairtune_ray.metrics.objectives import Objective
from fairtune_ray.models import adapted_modules, backbone_data_config
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.training.regime import effective_batch_size
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
    effective_batch_size: int = 0
    steps_per_epoch: int = 0


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


@dataclass
class _Run:
    """Everything one fine-tune holds between its steps (built once, used every epoch)."""

    cfg: ExperimentConfig
    spec: TrialSpec
    accelerator: Accelerator
    model: nn.Module
    trainable: int
    penalty: Optional[nn.Module]
    transform: BatchTransform
    train_loader: object
    eval_loaders: dict
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    loss_fn: nn.Module
    group_names: dict
    positive_is_disease: bool = True  # from dataset.json's disease_label: which error is underdiagnosis
    step: int = 0
    seen: int = 0
    train_time: float = 0.0
    adapted: int = 0  # layers holding a PEFT adapter


def accelerator_options(cfg: ExperimentConfig) -> dict:
    """How every fine-tune's Accelerator is set up: the GPU when there is one, the configured mixed
    precision, and batches copied to the device without blocking (from pinned memory, data/loading.py)."""
    cuda = torch.cuda.is_available()
    return {"cpu": not cuda, "mixed_precision": resolve_mixed_precision(cfg.train.mixed_precision),
            "dataloader_config": DataLoaderConfiguration(non_blocking=cuda)}


def make_accelerator(cfg: ExperimentConfig) -> Accelerator:
    return Accelerator(**accelerator_options(cfg))


def make_optimizer(cfg: ExperimentConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable parameters; no weight decay on biases and norms (ndim <= 1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.train.weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if cfg.train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.train.momentum)


def make_lr_scheduler(cfg: ExperimentConfig, optimizer, lr: float, epochs: int, steps_per_epoch: int) -> CosineLRScheduler:
    """timm's per-step schedule: linear warm-up from lr/100, then cosine down to lr/100."""
    total_steps = epochs * steps_per_epoch
    warmup = min(int(cfg.train.warmup_epochs * steps_per_epoch), total_steps - 1)
    return CosineLRScheduler(optimizer, t_initial=total_steps, lr_min=lr * 0.01, warmup_t=warmup,
                             warmup_lr_init=lr * 0.01, t_in_epochs=False)


def make_loss(cfg: ExperimentConfig, train_labels: torch.Tensor, device) -> nn.Module:
    """BCE on the logit; with ``data.class_weights`` positives weighted by negatives/positives."""
    pos_weight = None
    if cfg.data.class_weights:
        pos = train_labels.float().mean().clamp(1e-3, 1 - 1e-3)
        pos_weight = ((1 - pos) / pos).to(device)
    return nn.BCEWithLogitsLoss(pos_weight=pos_weight)


def _build_run(cfg: ExperimentConfig, spec: TrialSpec, data: PackedDataset, checkpoint: CheckpointLike,
               splits: set[str], accelerator: Accelerator, epochs: int) -> _Run:
    groups = coding_for(cfg.data.sensitive_attribute, data)  # the whole dataset's groups, attached by load_dataset
    model, trainable, penalty = build_model(cfg, spec, checkpoint, data)
    train_split = split_tensors(data, "train", groups)
    train_loader = make_loader(train_split, cfg.data.batch_size, train=True,
                               group_balanced=cfg.data.group_balanced, seed=spec.seed)
    eval_loaders = {s: make_loader(split_tensors(data, s, groups), cfg.data.eval_batch_size, train=False)
                    for s in splits}
    transform = BatchTransform(backbone_data_config(model), augment=cfg.data.augment)
    optimizer = make_optimizer(cfg, model, spec.lr)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    eval_loaders = {k: accelerator.prepare(v) for k, v in eval_loaders.items()}
    scheduler = make_lr_scheduler(cfg, optimizer, spec.lr, epochs, max(1, len(train_loader)))
    return _Run(cfg, spec, accelerator, model, trainable, penalty.to(accelerator.device) if penalty is not None else None,
                transform, train_loader, eval_loaders, optimizer, scheduler,
                make_loss(cfg, train_split.labels, accelerator.device), groups.names,
                positive_is_disease=data.info.positive_is_disease, adapted=len(adapted_modules(model)))


def _train_epoch(run: _Run, epoch: int) -> float:
    """One pass over the training loader; returns the mean training loss."""
    train_mode(run.model)
    t0 = time.perf_counter()
    loss_sum, n_batches = 0.0, 0
    for images, labels, _groups in run.train_loader:
        logits = run.model(run.transform(images, train=True)).float().view(-1)
        loss = run.loss_fn(logits, labels.float())
        if run.penalty is not None:
            loss = loss + run.penalty(run.model)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"training loss became {loss.item()} at epoch {epoch}, step {run.step} "
                                     f"(mask {run.spec.mask}, lr {run.spec.lr:g})")
        run.accelerator.backward(loss)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.step += 1
        run.scheduler.step_update(run.step)
        loss_sum += loss.item()
        n_batches += 1
        run.seen += len(labels)
    run.train_time += time.perf_counter() - t0
    return loss_sum / max(1, n_batches)


def train_mode(model: nn.Module) -> None:
    """Training mode, except that normalisation layers whose parameters are all frozen (a frozen
    ResNet stage, the linear probe's backbone) keep their running statistics: frozen means frozen.
    A norm layer without parameters (affine=False) follows the training mode."""
    model.train()
    for module in model.modules():
        if isinstance(module, _NormBase):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def split_metrics(scores: SplitScores, group_names: dict, positive_is_disease: bool = True) -> dict:
    """Every metric of one split. ``positive_is_disease`` (the dataset's ``disease_label == 1``) decides
    whether underdiagnosis is the FNR or, where label 1 is "no finding", the FPR of label 1."""
    return compute_metrics(scores.labels, scores.scores, scores.groups, group_names,
                           positive_is_disease=positive_is_disease)


def _evaluate(run: _Run, split: str) -> tuple[SplitScores, dict]:
    scores = predict(run.model, run.eval_loaders[split], run.transform, run.accelerator)
    return scores, split_metrics(scores, run.group_names, run.positive_is_disease)


@dataclass
class _Best:
    """The best epoch so far by the validation objective (NaN never wins over a number)."""

    objective: Objective
    value: Optional[float] = None
    epoch: int = -1
    record: dict = field(default_factory=dict)
    state: Optional[dict] = None

    def offer(self, epoch: int, value: float, record: dict, model: nn.Module) -> None:
        if self.value is None or (not math.isnan(value) and (math.isnan(self.value) or self.objective.better(value, self.value))):
            self.value, self.epoch, self.record, self.state = value, epoch, record, trainable_state(model)


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
    accelerator = accelerator or make_accelerator(cfg)
    set_seed(spec.seed)
    objective = parse_objective(cfg.train.objective)
    epochs = spec.epochs or cfg.train.epochs
    run = _build_run(cfg, spec, data, checkpoint, {"val", *final_splits}, accelerator, epochs)
    history: list[dict] = []
    best = _Best(objective)
    for epoch in range(1, epochs + 1):
        train_loss = _train_epoch(run, epoch)
        val_scores, val_metrics = _evaluate(run, "val")
        value = objective.value(val_metrics)
        record = {"epoch": epoch, "train/loss": train_loss, "lr": run.optimizer.param_groups[0]["lr"],
                  "objective": value, "trainable_params": run.trainable, "adapted_modules": run.adapted,
                  "effective_batch_size": effective_batch_size(cfg, accelerator.num_processes),
                  **prefixed(val_metrics, "val")}
        if cfg.search.tune_value == "lcb":
            record["objective_lcb"] = validation_bound(cfg, objective, val_scores, run.group_names,
                                                       run.positive_is_disease)
        history.append(record)
        best.offer(epoch, value, record, accelerator.unwrap_model(run.model))
        if on_epoch is not None:
            on_epoch(epoch, dict(record, best_objective=best.value, best_epoch=best.epoch))
    return _finish(run, best, history, final_splits, t0)


def _finish(run: _Run, best: _Best, history: list[dict], final_splits: tuple[str, ...], t0: float) -> FitResult:
    """Restore the best epoch (``train.select_epoch: best``) and score the final splits with it."""
    if best.state is not None and run.cfg.train.select_epoch == "best":
        run.accelerator.unwrap_model(run.model).load_state_dict(best.state, strict=False)
    total = sum(p.numel() for p in run.model.parameters())
    result = FitResult(run.spec, run.trainable, total, best.epoch, best.record, history,
                       effective_batch_size=effective_batch_size(run.cfg, run.accelerator.num_processes),
                       steps_per_epoch=len(run.train_loader))
    for split in final_splits:
        result.scores[split], result.final[split] = _evaluate(run, split)
    result.scores["val"] = predict(run.model, run.eval_loaders["val"], run.transform, run.accelerator)
    result.seconds = time.perf_counter() - t0
    result.train_samples_per_s = run.seen / max(run.train_time, 1e-9)
    return result


def validation_bound(cfg: ExperimentConfig, objective: Objective, val: SplitScores, group_names: dict,
                     positive_is_disease: bool = True) -> float:
    """``search.tune_value: lcb``: the objective's bootstrap bound on this epoch's validation scores, on
    the same resamples (``search.seed``) in every epoch and trial, so bounds compare like with like;
    ``positive_is_disease`` (the dataset's) as in the epoch's metrics."""
    return objective_bound(val.labels, val.scores, val.groups, objective, n_boot=cfg.search.lcb.replicates,
                           seed=cfg.search.seed, quantile=cfg.search.lcb.quantile, group_names=group_names,
                           positive_is_disease=positive_is_disease)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of what training can change: the trainable parameters and the buffers (BatchNorm's
    running statistics of the trained layers); cheap next to the whole state."""
    state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    persistent = model.state_dict(keep_vars=True).keys()
    state.update({n: b.detach().cpu().clone() for n, b in model.named_buffers() if n in persistent})
    return state


def model_data_config(model: nn.Module) -> dict:
    return backbone_data_config(model)
