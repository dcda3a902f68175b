"""Build the model a trial trains: backbone, mask (or LoRA), and the Fisher options."""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.manifest import PackedDataset
from fairtune_ray.models import Mask, apply_mask, create_backbone
from fairtune_ray.training.spec import TrialSpec


def build_model(cfg: ExperimentConfig, spec: TrialSpec, checkpoint: Optional[str],
                data: Optional[PackedDataset] = None) -> tuple[nn.Module, int, Optional[nn.Module]]:
    """Return (model, trainable-parameter count, optional penalty module)."""
    model = create_backbone(cfg.backbone, num_classes=1, checkpoint=checkpoint)
    trainable = apply_mask(model, Mask.parse(spec.mask), lora_rank=cfg.train.lora_rank)
    penalty = None
    return model, trainable, penalty
