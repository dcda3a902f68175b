"""model.json + model.safetensors -> the fine-tuned network, ready to score uint8 images.

The module structure a fine-tune changed is rebuilt before the weights load strictly: Fisher low-rank
factors (``LowRankLinear`` in place of the factorised ``nn.Linear``, shapes read from the weights).
PEFT adapters need no rebuilding: they were merged into the base weights at export (``capture``), so
a model trained with adapters loads as a plain backbone, without peft. Nothing is downloaded and the
pre-training checkpoint is not needed: every weight comes from the safetensors file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from fairtune_ray.config import BackboneConfig
from fairtune_ray.data.loading import BatchTransform
from fairtune_ray.data.pixels import ImageRows
from fairtune_ray.export.folder import WEIGHTS_FILE, read_model_meta
from fairtune_ray.models import Mask, apply_mask, create_backbone
from fairtune_ray.models.lowrank import LowRankLinear, resolve_linear_targets
from fairtune_ray.training.spec import TrialSpec


def rebuild_model(meta: dict, state: dict[str, torch.Tensor]) -> nn.Module:
    """The network model.json describes, with ``state`` loaded strictly (every key, every shape)."""
    backbone = BackboneConfig.model_validate({**meta["backbone"], "pretrained": False, "checkpoint": None})
    model = create_backbone(backbone, num_classes=1, checkpoint=None)
    spec = TrialSpec(**meta["spec"])
    if spec.peft_method:  # merged at export: the backbone's own structure
        state = _merge_old_lora(state)
    else:
        apply_mask(model, Mask.parse(spec.mask, model=model))
    if spec.uses_fisher and spec.rank > 0 and spec.factorise:
        _low_rank_shells(model, spec.factorise, state)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _merge_old_lora(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``lora`` model exported before adapters came from peft holds the hand-written LoRA's factors
    ``<layer>.lora_A`` / ``.lora_B`` (alpha = rank, scaling 1): merged here as W + B A."""
    out = {k: v for k, v in state.items() if not k.endswith((".lora_A", ".lora_B"))}
    for key in state:
        if key.endswith(".lora_A"):
            layer = key[:-len(".lora_A")]
            out[f"{layer}.weight"] = state[f"{layer}.weight"] + state[f"{layer}.lora_B"] @ state[key]
    return out


def _low_rank_shells(model: nn.Module, targets: list[str], state: dict[str, torch.Tensor]) -> None:
    """Replace each factorised ``nn.Linear`` by a ``LowRankLinear`` of the saved factors' shapes."""
    for path in resolve_linear_targets(model, targets):
        linear = model.get_submodule(path)
        a, b = state[f"{path}.A"], state[f"{path}.B"]
        shell = LowRankLinear(torch.empty_like(a), torch.empty_like(b), linear.bias)
        parent_path, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent_path) if parent_path else model, leaf, shell)


class ExportedModel:
    """A loaded model folder: ``score`` maps images to P(label 1), preprocessed as in training."""

    def __init__(self, folder: Union[str, Path], device: Optional[str] = None):
        self.folder = Path(folder)
        self.meta = read_model_meta(self.folder)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        state = load_file(str(self.folder / WEIGHTS_FILE), device="cpu")
        self.model = rebuild_model(self.meta, state).to(self.device)
        self.transform = BatchTransform(self.meta["preprocess"], augment=False)
        self.batch_size = int(self.meta["data"].get("eval_batch_size", 256))

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    @torch.no_grad()
    def score(self, images: np.ndarray, batch_size: Optional[int] = None) -> np.ndarray:
        """P(label 1) per image. ``images``: (N, H, W, C) or (N, H, W) pixel values on the 0-255
        scale, uint8 (as prepared datasets store them), integer or float. A dataset's ``ImageRows`` is
        read batch by batch (a memory-mapped test split is never loaded whole)."""
        if not isinstance(images, ImageRows):
            images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ValueError(f"expected a batch of images (N, H, W, C), got shape {images.shape}")
        bs = batch_size or self.batch_size
        out = []
        for i in range(0, len(images), bs):
            batch = images[i:i + bs]
            # uint8 is converted (a copy) by the transform; other dtypes are copied here, since the
            # transform divides in place and must not write into the caller's array
            x = torch.from_numpy(np.ascontiguousarray(batch) if batch.dtype == np.uint8 else batch.astype(np.float32))
            x = x.permute(0, 3, 1, 2).to(self.device)
            logits = self.model(self.transform(x, train=False)).float()
            out.append(torch.sigmoid(logits.view(-1)).cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)
