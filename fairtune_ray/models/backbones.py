"""timm backbones: the micro ViT preset, hub models by name, and local checkpoints.

Why one factory: every path (search trials, retraining, baselines, Fisher statistics) must start
from exactly the same pre-trained weights, so creation and checkpoint loading live in one place.
Nothing here downloads unless a user explicitly asks for ``pretrained: true`` on a hub model.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Mapping

import timm
import torch
from safetensors.torch import load_file as load_safetensors  # a dependency of timm
from safetensors.torch import save_file as save_safetensors
from torch import nn

from fairtune_ray.config import BackboneConfig, ConfigError
from fairtune_ray.models.shipping import (
    CheckpointError,
    CheckpointLike,
    checkpoint_path,
)

log = logging.getLogger(__name__)

MICRO_BASE = "vit_tiny_patch16_224"
"""timm architecture the ``micro`` preset is built from (resized by keyword arguments)."""


# --------------------------------------------------------------------------- model kinds
def is_vit(model: nn.Module) -> bool:
    """A timm VisionTransformer-like model: ``.blocks`` of transformer blocks with attn + mlp."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) == 0:
        return False
    return all(hasattr(b, "attn") and hasattr(b, "mlp") for b in blocks)


def is_resnet(model: nn.Module) -> bool:
    """A timm/torchvision ResNet-like model: four residual stages ``layer1..layer4`` + ``fc``."""
    return all(isinstance(getattr(model, f"layer{i}", None), nn.Module) for i in range(1, 5)) and hasattr(
        model, "fc"
    )


# --------------------------------------------------------------------------- creation
def create_backbone(cfg: BackboneConfig, num_classes: int = 1, checkpoint: CheckpointLike = None) -> nn.Module:
    """Build the configured backbone with a fresh ``num_classes`` head.

    ``checkpoint`` (overrides ``cfg.checkpoint``) loads local weights, from a path or from a
    :class:`~fairtune_ray.models.shipping.ShippedCheckpoint` (fetched to this node on first use);
    a head of a different shape (e.g. from pre-training on the source task) is dropped and keeps
    its fresh init.
    """
    ckpt = checkpoint_path(checkpoint if checkpoint is not None else cfg.checkpoint)
    if cfg.name == "micro":
        if cfg.pretrained and ckpt is None:
            raise ConfigError(
                "backbone.pretrained: backbone 'micro' has no hub weights: pre-train it on the synthetic source task "
                "and pass the resulting checkpoint (backbone.checkpoint), or set pretrained: false"
            )
        m = cfg.micro
        size = cfg.image_size or m.image_size
        model = timm.create_model(
            MICRO_BASE,
            pretrained=False,
            img_size=size,
            patch_size=m.patch_size,
            embed_dim=m.width,
            depth=m.depth,
            num_heads=m.heads,
            num_classes=num_classes,
            class_token=m.global_pool == "token",
            global_pool=m.global_pool,
            init_values=m.layer_scale,
        )
        _set_input_size(model, size, drop_hub=True)
    else:
        # A local checkpoint replaces hub weights: never download when one is given.
        pretrained = bool(cfg.pretrained) and ckpt is None
        model = _create_named(cfg.name, pretrained, num_classes, cfg.image_size)
    if ckpt is not None:
        load_checkpoint(model, ckpt)
    return model


def _create_named(name: str, pretrained: bool, num_classes: int, image_size: int | None) -> nn.Module:
    """timm model by name; ``img_size`` only where the architecture takes it (ViTs, not CNNs)."""
    if not timm.is_model(name):
        raise ConfigError(f"backbone.name: unknown timm model {name!r} (see timm.list_models())")
    if image_size:
        try:
            model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, img_size=image_size)
        except TypeError as e:
            if "img_size" not in str(e):
                raise
            # CNNs take any input size; only the data config needs the new size.
            model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
        _set_input_size(model, image_size)
        return model
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes)


def _set_input_size(model: nn.Module, size: int, drop_hub: bool = False) -> None:
    """Record the real input size in ``pretrained_cfg`` so timm's data config resolves it."""
    pcfg = dict(getattr(model, "pretrained_cfg", None) or {})
    pcfg["input_size"] = (3, int(size), int(size))
    if drop_hub:
        for k in ("url", "hf_hub_id", "file"):
            pcfg.pop(k, None)
        pcfg["tag"] = "micro"
    model.pretrained_cfg = pcfg
    if hasattr(model, "default_cfg"):
        try:
            model.default_cfg = pcfg
        except AttributeError:  # read-only property alias in some timm versions
            pass


def backbone_data_config(model: nn.Module) -> dict[str, Any]:
    """Normalisation and input size the backbone expects (timm's resolve_data_config)."""
    dc = dict(timm.data.resolve_data_config({}, model=model))
    pe = getattr(model, "patch_embed", None)
    img_size = getattr(pe, "img_size", None)
    if img_size is not None:  # a ViT's real size always wins over the hub default
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        dc["input_size"] = (dc.get("input_size", (3,))[0], int(h), int(w))
    return dc


# --------------------------------------------------------------------------- checkpoints
def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors without executing pickled code (safetensors or weights_only torch.load)."""
    try:
        if path.suffix == ".safetensors":
            sd: Any = load_safetensors(str(path), device="cpu")
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's own text advises weights_only=False: not for a user's file
        raise CheckpointError(f"{path}: not a loadable weights file: not a torch.save file of tensors only "
                              "(fairtune-ray never unpickles other objects)") from e
    except Exception as e:
        why = ": ".join([type(e).__name__, *(str(e).strip().splitlines() or [])[:1]])  # torch's texts run on
        raise CheckpointError(f"{path}: not a loadable weights file ({why})") from e
    if isinstance(sd, Mapping):
        for key in ("state_dict", "model"):
            inner = sd.get(key)
            if isinstance(inner, Mapping):
                sd = inner
                break
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (raw, or under 'state_dict'/'model')")
    sd = dict(sd)
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DDP-wrapped model
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _head_prefixes(model: nn.Module) -> set[str]:
    """Name prefixes of the classification head (``head.``/``fc.``), with or without params."""
    prefixes: set[str] = set()
    pcfg = getattr(model, "pretrained_cfg", None) or {}
    clf = pcfg.get("classifier")
    if isinstance(clf, str):
        prefixes.add(clf + ".")
    elif isinstance(clf, (list, tuple)):
        prefixes.update(c + "." for c in clf)
    if hasattr(model, "get_classifier"):
        ids = {id(p) for p in model.get_classifier().parameters()}
        for n, p in model.named_parameters():
            if id(p) in ids:
                prefixes.add(n.rsplit(".", 1)[0] + ".")
    return prefixes


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load local weights into ``model`` in place; a mismatching head is re-initialised.

    Why strict otherwise: a silently half-loaded backbone would make every fairness number
    downstream meaningless, so any other missing/unexpected/mis-shaped key is an error.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"backbone checkpoint not found: {p}")
    sd = _read_state_dict(p)
    own = model.state_dict()
    heads = _head_prefixes(model)

    def in_head(k: str) -> bool:
        return any(k.startswith(h) for h in heads)

    dropped = [k for k, v in sd.items() if in_head(k) and (k not in own or own[k].shape != v.shape)]
    for k in dropped:
        del sd[k]
    mismatched = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in sd and not in_head(k)]
    unexpected = [k for k in sd if k not in own]
    if mismatched or missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), first: {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), first: {unexpected[:5]}")
        if mismatched:
            shown = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:5]]
            parts.append(f"{len(mismatched)} shape mismatch(es), first: {shown}")
        raise CheckpointError(
            f"checkpoint {p} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    model.load_state_dict(sd, strict=False)  # only head keys may be absent (checked above)
    if dropped:
        log.info("checkpoint %s: head re-initialised (dropped %s)", p, dropped)
    return model


def save_backbone(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the state dict atomically (cache shared by concurrent trials must never be torn)."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=str(p.parent))
    os.close(fd)
    try:
        if p.suffix == ".safetensors":
            save_safetensors(sd, tmp)
        else:  # through a buffer: torch.save names its archive after the file, and tmp's name is random
            buf = io.BytesIO()
            torch.save(sd, buf)
            Path(tmp).write_bytes(buf.getvalue())
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameter elements, the figure logged with every mask."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
