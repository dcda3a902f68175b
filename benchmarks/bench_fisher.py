"""Benchmark: the per-group Fisher pass against one training epoch over the same samples.

Same model (micro ViT: img 32, patch 4, width 96, depth 6, heads 3, one logit), same samples
(2 groups x 64 by default), measured side by side in one process: one warm-up call each, then
the best of 3 timed calls each, of
* the Fisher as the search computes it: per-sample gradients of the linear and LayerNorm layers
  from one batched backward per chunk (``method='hooks'``, fisher/per_sample.py);
* the same with ``torch.func`` vmap(grad) (``method='vmap'``, any layer);
* a plain loop of one autograd pass per sample (the reference);
* one training epoch over the same samples (AdamW, train mode, forward + backward + step) at the
  demo's batch size 16 and at the Fisher's chunk size.
Checks that the three Fisher computations agree, prints ONE JSON line, then a short markdown table.

    .venv/bin/python benchmarks/bench_fisher.py [--quick] [--samples-per-group 64] [--chunk-size 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Callable

import torch

from fairtune_ray.fisher import fisher_param_names, naive_per_group_fisher, per_group_fisher


def _best_of(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _max_rel_err(a: dict, b: dict) -> float:
    """max over tensors of max|a-b| / max|b| (relative to each tensor's scale)."""
    worst = 0.0
    for g in b:
        for n, ref in b[g].items():
            scale = float(ref.abs().max())
            if scale > 0:
                worst = max(worst, float((a[g][n] - ref).abs().max()) / scale)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke test (2 x 8 samples, chunks of 8, 1 repeat)")
    ap.add_argument("--samples-per-group", type=int, default=None)
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16, help="training batch of the epoch compared (the demo's)")
    args = ap.parse_args()
    args.samples_per_group = args.samples_per_group or (8 if args.quick else 64)
    args.chunk_size = args.chunk_size or (8 if args.quick else 32)
    args.repeats = args.repeats or (1 if args.quick else 3)

    import timm

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4,
        embed_dim=96, depth=6, num_heads=3, num_classes=1,
    )  # fmt: skip
    n = args.groups * args.samples_per_group
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 2, (n,), generator=gen)
    groups = torch.arange(n) % args.groups
    names = fisher_param_names(model)
    kw = dict(param_names=names, samples_per_group=args.samples_per_group, chunk_size=args.chunk_size, seed=0)

    hooks_s, hooked = _best_of(lambda: per_group_fisher(model, images, labels, groups, method="hooks", **kw), args.repeats)
    vmap_s, fast = _best_of(lambda: per_group_fisher(model, images, labels, groups, method="vmap", **kw), args.repeats)
    naive_s, slow = _best_of(lambda: naive_per_group_fisher(model, images, labels, groups, **kw), args.repeats)
    epoch_s = {b: _best_of(lambda b=b: _train_epoch(model, images, labels, b), args.repeats)[0]
               for b in sorted({args.batch_size, args.chunk_size})}
    err = max(_max_rel_err(fast, slow), _max_rel_err(hooked, slow))
    ok = all(
        torch.allclose(f[g][p], slow[g][p], rtol=1e-4, atol=1e-6 * float(slow[g][p].abs().max()))
        for f in (fast, hooked)
        for g in slow
        for p in slow[g]
    )
    result = {
        "bench": "fisher",
        "quick": args.quick,
        "hooks_s": round(hooks_s, 4),
        "vmap_s": round(vmap_s, 4),
        "naive_s": round(naive_s, 4),
        "epoch_s": {str(b): round(t, 4) for b, t in epoch_s.items()},
        "fisher_over_epoch": round(hooks_s / epoch_s[args.batch_size], 2),
        "fisher_over_epoch_same_batch": round(hooks_s / epoch_s[args.chunk_size], 2),
        "speedup": round(naive_s / vmap_s, 2),
        "hooks_over_vmap_speedup": round(vmap_s / hooks_s, 2),
        "max_rel_err": err,
        "agree": ok,
        "samples": n,
        "groups": args.groups,
        "chunk_size": args.chunk_size,
        "batch_size": args.batch_size,
        "fisher_params": sum(p.numel() for nm, p in model.named_parameters() if nm in set(names)),
        "model_params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    print(json.dumps(result))
    print()
    print(f"| pass over {n} samples | time (s), best of {args.repeats} | samples/s | vs one training epoch (batch {args.batch_size}) |")
    print("|---|---|---|---|")
    rows = [(f"Fisher, batched backward + per-sample closed forms, chunks of {args.chunk_size}", hooks_s),
            (f"Fisher, vmap(grad), chunks of {args.chunk_size}", vmap_s), ("Fisher, per-sample loop", naive_s),
            *((f"one training epoch, batch {b}", t) for b, t in epoch_s.items())]
    for label, t in rows:
        print(f"| {label} | {t:.3f} | {n / t:.0f} | {t / epoch_s[args.batch_size]:.2f} |")
    print(f"\nFisher / training epoch {result['fisher_over_epoch']:.2f} (batch {args.batch_size}), "
          f"{result['fisher_over_epoch_same_batch']:.2f} (batch {args.chunk_size}); vmap takes {result['hooks_over_vmap_speedup']:.2f}x "
          f"the batched backward's time, the loop {result['speedup']:.2f}x vmap's; max relative error {err:.2e}, agree={ok}")
    if not ok:
        raise SystemExit("the Fisher computations disagree")


def _train_epoch(model, images, labels, batch_size: int) -> None:
    """One epoch of fine-tuning over ``images`` on a copy of ``model`` (the copy, a few ms, is timed too)."""
    import copy

    m = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for start in range(0, images.shape[0], batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size].float()
        opt.zero_grad(set_to_none=True)
        loss_fn(m(x).squeeze(1), y).backward()
        opt.step()


if __name__ == "__main__":
    main()
