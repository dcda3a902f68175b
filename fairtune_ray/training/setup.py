"""Build the model a trial trains: backbone, mask (and the PEFT adapters it places), and the Fisher options."""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.fisher.cache import load_fitted_head, load_importance
from fairtune_ray.fisher.head import set_head
from fairtune_ray.fisher.penalty import EWCPenalty
from fairtune_ray.models import Mask, apply_mask, create_backbone, head_param_names
from fairtune_ray.models.lowrank import factorise_linears
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.training.spec import TrialSpec


def build_model(cfg: ExperimentConfig, spec: TrialSpec, checkpoint: CheckpointLike,
                data: Optional[PackedDataset] = None) -> tuple[nn.Module, int, Optional[nn.Module]]:
    """Return (model, trainable-parameter count, optional penalty module).

    With a PEFT method (``spec.adapters()``) the mask places the method's adapters (docs/design.md#mask-spaces):
    the count is then the adapters' and the head's elements, as peft's ``get_nb_trainable_parameters``
    counts them.

    The head: in a study that uses the Fisher (``cfg.fisher.importance_path`` is set, by the
    search, and its cache holds a fitted head, ``fisher.fit_head``), every model starts from that
    fitted head, set right after the backbone is created and before the mask and factorisation:
    trials, confirmation fits, baselines and retrains alike, so every candidate of the study starts
    from the same head and comparisons stay like for like. Otherwise (a plain fine-tune, or
    ``fit_head: false``) the head is the fresh random one, as before.

    Fisher options (docs/design.md#fisher-neutralisation), active only when ``spec.uses_fisher``; I' at ``spec.gamma`` is
    read from ``cfg.fisher.importance_path`` (set by the search):

    * ``rank > 0`` and ``factorise``: those ``nn.Linear`` layers become Fisher-weighted-SVD
      factors A, B of rank ``rank``. The factors follow the mask: A and B are trainable iff
      the mask's parameter group that contains the replaced layer's weight is on (for a fixed
      mask: iff it trains that weight), so the rank never trains what the mask froze; the
      bias keeps the mask's setting. Hence the mask is applied before factorising. Every
      target must compress, r(m+n) < mn (a ValueError otherwise; the search checks its ranks
      before Ray starts).
    * ``ewc_lambda > 0``: the penalty ``lambda/2 * sum I' (theta - theta*)^2`` over the
      trainable backbone parameters that have an importance (frozen ones cannot move;
      factorised weights no longer exist; the head is left out: theta* for it is the fitted
      linear probe (or a random init), which the fine-tune is meant to adapt to the moving
      features), with theta* the weights at this point. I' sums to 1 over ~10^5-10^8
      elements, so it is rescaled to mean 1 over the penalised elements: lambda is then the
      penalty per unit squared displacement of a weight of average importance.
    """
    model = create_backbone(cfg.backbone, num_classes=1, checkpoint=checkpoint)
    head = load_fitted_head(cfg.fisher.importance_path)
    if head is not None:
        set_head(model, head)
    trainable = apply_mask(model, Mask.parse(spec.mask), adapters=spec.adapters())
    penalty = None
    if not spec.uses_fisher:
        return model, trainable, penalty

    importance = load_importance(cfg.fisher.importance_path, spec.gamma)
    if spec.rank > 0 and spec.factorise:
        if spec.peft_method:  # the search never draws both (search/space.py drops the factors)
            raise ValueError(f"spec {spec.short_name()}: PEFT adapters and Fisher factors would replace the same layers")
        factorise_linears(model, importance, spec.rank, spec.factorise)  # factors inherit the mask's flags
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
