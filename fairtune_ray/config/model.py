"""The ``backbone`` and ``mask`` sections: the pre-trained model and which of its parts a mask switches."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from fairtune_ray.config.base import StrictSection


class MicroConfig(StrictSection):
    """A CPU-sized timm ViT. Average pooling and LayerScale make it trainable from scratch in a few
    hundred steps (a CLS-token ViT with default init sits on a loss plateau far longer)."""

    image_size: int = Field(32, description="Input size in pixels (`backbone.image_size` overrides it).")
    patch_size: int = Field(8, description="Patch side in pixels; the model sees (image_size / patch_size)^2 patches.")
    width: int = Field(96, description="Embedding dimension of every block.")
    depth: int = Field(6, description="Transformer blocks; the mask spaces have a fixed number of bits per block.")
    heads: int = Field(3, description="Attention heads per block; `width` must be divisible by it.")
    global_pool: Literal["avg", "token"] = Field("avg", description=(
        "'avg' pools the patch tokens (no class token); 'token' reads a class token, as the original ViT does."))
    layer_scale: Optional[float] = Field(0.1, gt=0, description=(
        "Initial LayerScale value (timm's init_values); null turns LayerScale off."))


class BackboneConfig(StrictSection):
    """The pre-trained model every trial, retrain, baseline and Fisher computation starts from."""

    name: str = Field("micro", description=(
        "'micro' for the built-in CPU-sized ViT (pre-trained on the synthetic source task and cached), or "
        "any timm model name, e.g. vit_base_patch16_224."))
    pretrained: bool = Field(False, description=(
        "Load timm's pre-trained weights for `name` (downloaded by each node on first use). Not for 'micro', "
        "and not together with `checkpoint`."))
    checkpoint: Optional[str] = Field(None, description=(
        "A local weights file to start from instead. It needs to exist only where the driver runs: the "
        "other nodes receive it through Ray's object store. A head of another shape is replaced."))
    micro: MicroConfig = Field(MicroConfig(), description=(
        "Architecture of the 'micro' preset; used only when `backbone.name` is 'micro'."))
    pretrain_epochs: int = Field(10, ge=1, description=(
        "Epochs of pre-training 'micro' on the synthetic source task; done once and cached under "
        "`data.cache_dir`, keyed by these settings."))
    image_size: Optional[int] = Field(None, description=(
        "Model input size in pixels, passed to timm (img_size), or replacing `micro.image_size`; null keeps "
        "the model's own."))

    @model_validator(mode="after")
    def _weights_source(self):
        if self.pretrained and self.checkpoint:
            raise ValueError("set either 'pretrained: true' or 'checkpoint', not both")
        return self


class MaskConfig(StrictSection):
    """Which parameter groups of the backbone the searched mask switches on and off
    (docs/design.md#mask-spaces). The classification head is always trained."""

    space: str = Field("attn_mlp_norm", description=(
        "Mask space: 'block', 'attn_mlp_norm', 'attn_norm1_mlp_norm2' or 'attn_params' for ViTs, 'stage' "
        "for CNNs with stages (ResNet, ConvNeXt...); one bit per parameter group. Checked against the "
        "backbone before Ray starts."))
