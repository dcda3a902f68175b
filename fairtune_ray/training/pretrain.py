"""Pre-train the micro ViT on the synthetic source task once, and cache it.

The demo then fine-tunes a *pre-trained* model, as the real workflow does with timm's weights.
The cache key is a hash of everything that decides the weights (backbone preset, source data
config, epochs, code version), so a changed config pre-trains again and an unchanged one reuses.
The SHA-256 of the weights is recorded beside them (``<file>.sha256``) and checked before each reuse:
the cache folder is only a folder, and a file altered since it was written (a torn copy, a bit flip,
another user's file) would silently change every result, so such a file is pre-trained again.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.utils import set_seed

from fairtune_ray.common.files import atomic_write_text
from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.loading import BatchTransform, make_loader, split_tensors
from fairtune_ray.data.synthetic import load_synthetic
from fairtune_ray.models import backbone_data_config, create_backbone, save_backbone
from fairtune_ray.models.shipping import file_sha256

PRETRAIN_VERSION = 2


#: torch threads of the pre-training: float sums depend on the thread count, so a fixed count gives
#: every machine and every caller (the demo, a test, a benchmark with 1 thread) the same weights
PRETRAIN_THREADS = 2


def pretrain_key(cfg: ExperimentConfig) -> str:
    payload = {"micro": cfg.backbone.micro.model_dump(), "epochs": cfg.backbone.pretrain_epochs,
               "source": cfg.data.synthetic.model_dump(), "v": PRETRAIN_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def pretrained_path(cfg: ExperimentConfig) -> Path:
    return Path(cfg.data.cache_dir) / "backbones" / f"micro-{pretrain_key(cfg)}.pt"


def resolve_checkpoint(cfg: ExperimentConfig, log=print) -> str | None:
    """The weights a fine-tune starts from: a given checkpoint, the cached micro backbone
    (pre-trained now if missing), or None for timm hub weights / random init."""
    if cfg.backbone.checkpoint:
        if not Path(cfg.backbone.checkpoint).is_file():
            raise FileNotFoundError(f"backbone.checkpoint: file '{cfg.backbone.checkpoint}' does not exist")
        return cfg.backbone.checkpoint
    if cfg.backbone.name == "micro":
        return str(ensure_pretrained(cfg, log=log))
    return None


def digest_path(path: Path) -> Path:
    """Where the SHA-256 of a cached backbone is recorded: ``micro-<key>.pt.sha256`` beside it."""
    return path.with_name(path.name + ".sha256")


def record_digest(path: Path) -> str:
    digest = file_sha256(path)
    atomic_write_text(digest_path(path), digest + "\n")
    return digest


def digest_problem(path: Path) -> str:
    """Why the cached file at ``path`` cannot be trusted; '' when its SHA-256 is the recorded one."""
    record = digest_path(path)
    if not record.is_file():
        return f"no SHA-256 was recorded with it ({record.name} is missing)"
    expected, actual = record.read_text().strip(), file_sha256(path)
    if actual != expected:
        return f"its SHA-256 {actual[:12]}... is not the one recorded when it was written ({expected[:12]}...)"
    return ""


def ensure_pretrained(cfg: ExperimentConfig, log=print, force: bool = False) -> Path:
    """The cached pre-trained micro backbone, pre-trained now when missing, forced or altered since written."""
    path = pretrained_path(cfg)
    if path.is_file() and not force:
        problem = digest_problem(path)
        if not problem:
            return path
        log(f"cached backbone {path}: {problem}; pre-training it again")
    log(f"pre-training the micro backbone on the synthetic source task -> {path}")
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)  # the weights must not depend on the caller's thread count
    try:
        model, stats = pretrain_micro(cfg)
    finally:
        torch.set_num_threads(threads)
    save_backbone(model, path)  # atomic itself: concurrent readers never see half a file
    record_digest(path)
    log(f"pre-trained in {stats['seconds']:.0f}s, source val accuracy {stats['val_acc']:.3f}")
    return path


def pretrain_micro(cfg: ExperimentConfig, lr: float = 1e-3) -> tuple[nn.Module, dict]:
    t0 = time.perf_counter()
    set_seed(cfg.train.seed)
    data = load_synthetic(cfg.data.synthetic, cfg.data.cache_dir, kind="source")
    n_classes = len(data.info.label_names)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = create_backbone(cfg.backbone, num_classes=n_classes)
    transform = BatchTransform(backbone_data_config(model), augment=True)
    train = make_loader(split_tensors(data, "train", "skin_tone"), 64, train=True, seed=cfg.train.seed)
    val = make_loader(split_tensors(data, "val", "skin_tone"), 512, train=False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = cfg.backbone.pretrain_epochs * len(train)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model, opt, train, val, sched = accelerator.prepare(model, opt, train, val, sched)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(cfg.backbone.pretrain_epochs):
        model.train()
        for images, labels, _ in train:
            loss = loss_fn(model(transform(images, train=True)), labels)
            accelerator.backward(loss)
            opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels, _ in val:
            pred = model(transform(images, train=False)).argmax(-1)
            correct += int((pred == labels).sum())
            total += len(labels)
    return accelerator.unwrap_model(model), {"val_acc": correct / max(total, 1), "seconds": time.perf_counter() - t0}
