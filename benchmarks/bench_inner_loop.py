"""Benchmark: throughput of the project's inner loop versus a bare PyTorch loop.

Same model (the configured micro ViT, full fine-tuning: every parameter trainable), same training
tensors, same per-batch transform (uint8 -> float, normalise, random flips), same batch size,
AdamW with the same parameter groups, same torch threads. Measured side by side in one process:
one warm-up call each, then ``--repeats`` interleaved calls each; the median is reported.

* bare PyTorch: shuffle indices, slice the tensors, forward, BCE, backward, step. Nothing else.
* bare PyTorch + the project's DataLoader: the same, with batches from ``make_loader``.
* project, training only: ``fine_tune``'s own ``FitResult.train_samples_per_s`` (it times the
  training batches of every epoch, excluding the per-epoch validation pass).
* project, with per-epoch evaluation: training images per second of the loop's wall time (all
  epochs, from the loop's start to the last epoch's end), which adds the validation pass, the subgroup metrics, the copy of the best
  epoch's trainable weights and the ``on_epoch`` callback. The difference is reported as the
  evaluation cost per epoch.

    .venv/bin/python benchmarks/bench_inner_loop.py [--quick] [--repeats 5] [--epochs 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BENCH_SETTINGS, emit, env_info, quiet_stdout  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def bare_loop(cfg, spec, data, epochs: int, project_loader: bool = False) -> tuple[float, int]:
    """A plain PyTorch training loop over the same model/data/transform; returns (seconds, samples).

    ``project_loader``: take the batches from the project's ``make_loader`` (a DataLoader whose
    dataset gathers whole uint8 batches) instead of slicing one tensor, to show what that part costs."""
    import torch
    import torch.nn as nn

    from fairtune_ray.data.loading import BatchTransform, make_loader, split_tensors
    from fairtune_ray.training.loop import model_data_config
    from fairtune_ray.training.setup import build_model

    torch.manual_seed(spec.seed)
    model, _, _ = build_model(cfg, spec, None, data)
    transform = BatchTransform(model_data_config(model), augment=cfg.data.augment)
    train = split_tensors(data, "train", cfg.data.sensitive_attribute)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.train.weight_decay},
                             {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}], lr=spec.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    n, bs = len(train), cfg.data.batch_size
    all_images = train.image_tensor()  # the bare loop's ideal: one uint8 tensor, sliced per batch
    model.train()
    t0 = time.perf_counter()
    loader = make_loader(train, bs, train=True, seed=spec.seed) if project_loader else None

    def batches():
        if loader is not None:
            for images, labels, _ in loader:
                yield images, labels
            return
        perm = torch.randperm(n)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            yield all_images[idx], train.labels[idx]

    for _ in range(epochs):
        for images, labels in batches():
            logits = model(transform(images, train=True)).view(-1)
            loss = loss_fn(logits, labels.float())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, n * epochs


def project_loop(cfg, spec, data) -> dict:
    """``fine_tune`` as a trial runs it. The loop's start is the end of its last
    ``accelerator.prepare`` call (only a timm LR scheduler is built after it); epoch ends are
    the ``on_epoch`` calls, which come after each epoch's validation pass."""
    import torch
    from accelerate import Accelerator

    from fairtune_ray.training.loop import fine_tune, resolve_mixed_precision

    class StampedAccelerator(Accelerator):
        def prepare(self, *args, **kwargs):
            out = super().prepare(*args, **kwargs)
            self.prepared_at = time.perf_counter()
            return out

    acc = StampedAccelerator(cpu=not torch.cuda.is_available(),
                             mixed_precision=resolve_mixed_precision(cfg.train.mixed_precision))
    ends: list[float] = []
    fit = fine_tune(cfg, spec, data, None, on_epoch=lambda e, r: ends.append(time.perf_counter()), final_splits=(),
                    accelerator=acc)
    n_train = int((data.manifest["split"] == "train").sum())
    with_eval = n_train * len(ends) / (ends[-1] - acc.prepared_at)
    return {"train_sps": fit.train_samples_per_s, "with_eval_sps": with_eval, "n_train": n_train}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke test (300 images, 2 epochs, 1 repeat)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--n-samples", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=str(REPO / ".fairtune_cache"))
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 5)
    epochs = max(2, args.epochs or (2 if args.quick else 3))
    n_samples = args.n_samples or (300 if args.quick else 2000)

    with quiet_stdout():
        import torch

        from fairtune_ray.config import load_config
        from fairtune_ray.data.loading import load_dataset
        from fairtune_ray.training.spec import TrialSpec

        torch.set_num_threads(args.threads)
        cfg = load_config(None, overrides={**BENCH_SETTINGS, "data.synthetic.n_samples": n_samples, "data.cache_dir": args.cache_dir,
                                           "train.epochs": epochs, "train.threads": args.threads})
        data = load_dataset(cfg.data)
        spec = TrialSpec(mask="full", lr=cfg.train.lr, seed=0)
        project_loop(cfg, spec, data)  # warm-up
        bare_loop(cfg, spec, data, 1)
        proj, bare, bare_dl = [], [], []
        for _ in range(repeats):  # interleaved, so load changes hit all alike
            proj.append(project_loop(cfg, spec, data))
            s, n = bare_loop(cfg, spec, data, epochs)
            bare.append(n / s)
            s, n = bare_loop(cfg, spec, data, epochs, project_loader=True)
            bare_dl.append(n / s)

    med = statistics.median
    bare_sps = med(bare)
    bare_dl_sps = med(bare_dl)
    train_sps = med([p["train_sps"] for p in proj])
    eval_sps = med([p["with_eval_sps"] for p in proj])
    n_train = proj[0]["n_train"]
    eval_s_per_epoch = n_train / eval_sps - n_train / train_sps
    result = {
        "bench": "inner_loop", "quick": args.quick, "model": f"micro ViT {cfg.backbone.micro.model_dump()}",
        "mask": "full", "batch_size": cfg.data.batch_size, "n_train": n_train,
        "n_val": int((data.manifest["split"] == "val").sum()), "epochs": epochs, "repeats": repeats,
        "bare_sps": round(bare_sps, 1), "bare_with_project_loader_sps": round(bare_dl_sps, 1),
        "ratio_loader_vs_bare": round(bare_dl_sps / bare_sps, 3), "project_train_sps": round(train_sps, 1), "project_with_eval_sps": round(eval_sps, 1),
        "ratio_train_vs_bare": round(train_sps / bare_sps, 3), "ratio_with_eval_vs_bare": round(eval_sps / bare_sps, 3),
        "eval_s_per_epoch": round(eval_s_per_epoch, 4), "eval_fraction_of_epoch": round(1 - eval_sps / train_sps, 3),
        "all_bare_sps": [round(x, 1) for x in bare], "all_project_train_sps": [round(p["train_sps"], 1) for p in proj],
        **env_info(args.threads),
    }
    table = "\n".join([
        f"Micro ViT, full fine-tuning, {n_train} training images, batch {cfg.data.batch_size}, {epochs} epochs, "
        f"{args.threads} threads; median of {repeats} interleaved run(s).",
        "",
        "| loop | training images/s | ratio to bare |",
        "|---|---|---|",
        f"| bare PyTorch loop | {bare_sps:.0f} | 1.00 |",
        f"| bare PyTorch loop, batches from the project's DataLoader | {bare_dl_sps:.0f} | {bare_dl_sps / bare_sps:.2f} |",
        f"| project `fine_tune`, training only (per-epoch eval excluded) | {train_sps:.0f} | {train_sps / bare_sps:.2f} |",
        f"| project `fine_tune`, with per-epoch validation + subgroup metrics | {eval_sps:.0f} | {eval_sps / bare_sps:.2f} |",
        "",
        f"Per-epoch evaluation ({result['n_val']} validation images, subgroup metrics, best-weights copy): "
        f"{eval_s_per_epoch:.3f} s per epoch, {100 * result['eval_fraction_of_epoch']:.1f}% of an epoch's wall time.",
    ])
    emit(result, table)


if __name__ == "__main__":
    main()
