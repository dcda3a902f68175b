"""Build the model a trial trains: backbone, mask (or LoRA), and the Fisher options."""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.fisher.cache import load_importance
from fairtune_ray.fisher.penalty import EWCPenalty
from fairtune_ray.models import Mask, apply_mask, create_backbone, head_param_names
from fairtune_ray.models.lowrank import factorise_linears
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.training.spec import TrialSpec


def build_model(cfg: ExperimentConfig, spec: TrialSpec, checkpoint: CheckpointLike,
                data: Optional[PackedDataset] = None) -> tuple[nn.Module, int, Optional[nn.Module]]:
    """Return (model, trainable-parameter count, optional penalty module).

    Fisher options (docs/design.md#fisher-neutralisation), active only when ``spec.uses_fisher``; I' at ``spec.gamma`` is
    read from ``cfg.fisher.importance_path`` (set by the search):

    * ``rank > 0`` and ``factorise``: those ``nn.Linear`` layers become Fisher-weighted-SVD
      factors A, B of rank ``rank``; the factors are trainable whatever the mask says (the
      layer's bias keeps the mask's setting).
    * ``ewc_lambda > 0``: the penalty ``lambda/2 * sum I' (theta - theta*)^2`` over the
      trainable backbone parameters that have an importance (frozen ones cannot move;
      factorised weights no longer exist; the new head's theta* is a random init, so there is
      nothing to preserve), with theta* the weights at this point. I' sums to 1 over ~10^5-10^8
      elements, so it is rescaled to mean 1 over the penalised elements: lambda is then the
      penalty per unit squared displacement of a weight of average importance.
    """
    model = create_backbone(cfg.backbone, num_classes=1, checkpoint=checkpoint)
    trainable = apply_mask(model, Mask.parse(spec.mask), lora_rank=cfg.train.lora_rank)
    penalty = None
    if not spec.uses_fisher:
        return model, trainable, penalty

    importance = load_importance(cfg.fisher.importance_path, spec.gamma)
    if spec.rank > 0 and spec.factorise:
        factorise_linears(model, importance, spec.rank, spec.factorise)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if spec.ewc_lambda > 0:
        penalty = ewc_penalty(model, importance, spec.ewc_lambda)
    return model, trainable, penalty


def ewc_penalty(model: nn.Module, importance: dict, ewc_lambda: float) -> Optional[EWCPenalty]:
    """The EWC penalty over the trainable backbone parameters that have an importance, with I'
    rescaled to mean 1 over them (None when no trainable parameter has one)."""
    head = set(head_param_names(model))
    params = {n for n, p in model.named_parameters() if p.requires_grad and n not in head}
    selected = {n: t for n, t in importance.items() if n in params}
    if not selected:
        return None
    total = sum(float(t.sum()) for t in selected.values())
    count = sum(t.numel() for t in selected.values())
    scale = count / total if total > 0 else 1.0
    return EWCPenalty(model, {n: t * scale for n, t in selected.items()}, ewc_lambda, strict=False)
