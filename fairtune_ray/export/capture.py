"""The weights out of a fine-tune: ``fine_tune`` returns metrics, not the model, so a retrain that is
exported hands it an Accelerator that remembers the model it prepared (the loop restores the best
epoch into that same module before it returns)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

from accelerate import Accelerator
from safetensors.torch import save as safetensors_bytes
from torch import nn

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.models import backbone_data_config, has_adapters, merge_adapters
from fairtune_ray.training.loop import accelerator_options


class ModelKeepingAccelerator(Accelerator):
    """An Accelerator that keeps the first model passed to ``prepare``."""

    kept: Optional[nn.Module] = None

    @classmethod
    def for_config(cls, cfg: ExperimentConfig) -> "ModelKeepingAccelerator":
        """Set up as ``training.loop.make_accelerator`` sets up the loop's own."""
        return cls(**accelerator_options(cfg))

    def prepare(self, *args, **kwargs):
        out = super().prepare(*args, **kwargs)
        for obj in out if isinstance(out, tuple) else (out,):
            if self.kept is None and isinstance(obj, nn.Module):
                self.kept = obj
        return out

    def trained_model(self) -> nn.Module:
        if self.kept is None:
            raise RuntimeError("no model was prepared: fine_tune did not run with this accelerator")
        return self.unwrap_model(self.kept)


@dataclass
class TrainedWeights:
    """What a retrain sends back for an export: the safetensors bytes of the full state dict and the
    preprocessing the model expects (timm's data config)."""

    weights: bytes
    preprocess: dict
    total_params: int


def capture(model: nn.Module) -> TrainedWeights:
    """The full state dict (frozen weights, low-rank factors, buffers) as safetensors bytes. PEFT adapters
    are merged into their base weights first (on a copy, as peft's ``merge_and_unload``): the exported
    model is a plain backbone, which ``evaluate`` and ``predict`` rebuild without peft."""
    if has_adapters(model):
        model = merge_adapters(copy.deepcopy(model))
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    dc = backbone_data_config(model)
    preprocess = {"mean": [float(x) for x in dc["mean"]], "std": [float(x) for x in dc["std"]],
                  "input_size": [int(x) for x in dc["input_size"]], "interpolation": "bilinear"}
    return TrainedWeights(safetensors_bytes(state), preprocess, sum(p.numel() for p in model.parameters()))
