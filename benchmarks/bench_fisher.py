"""Benchmark: per-sample Fisher with torch.func vmap(grad) vs a plain per-sample autograd loop.

Same model (micro ViT: img 32, patch 4, width 96, depth 6, heads 3, one logit), same samples
(2 groups x 64 by default), measured side by side in one process: one warm-up call each, then
the best of 3 timed calls each. Checks that the two agree, prints ONE JSON line, then a short
markdown table.

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

    vmap_s, fast = _best_of(lambda: per_group_fisher(model, images, labels, groups, **kw), args.repeats)
    naive_s, slow = _best_of(lambda: naive_per_group_fisher(model, images, labels, groups, **kw), args.repeats)
    err = _max_rel_err(fast, slow)
    ok = all(
        torch.allclose(fast[g][p], slow[g][p], rtol=1e-4, atol=1e-6 * float(slow[g][p].abs().max()))
        for g in slow
        for p in slow[g]
    )
    result = {
        "bench": "fisher",
        "quick": args.quick,
        "vmap_s": round(vmap_s, 4),
        "naive_s": round(naive_s, 4),
        "speedup": round(naive_s / vmap_s, 2),
        "max_rel_err": err,
        "agree": ok,
        "samples": n,
        "groups": args.groups,
        "chunk_size": args.chunk_size,
        "fisher_params": sum(p.numel() for nm, p in model.named_parameters() if nm in set(names)),
        "model_params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    print(json.dumps(result))
    print()
    print(f"| method | time (s), best of {args.repeats} | samples/s |")
    print("|---|---|---|")
    print(f"| vmap(grad) chunks of {args.chunk_size} | {vmap_s:.3f} | {n / vmap_s:.0f} |")
    print(f"| naive per-sample loop | {naive_s:.3f} | {n / naive_s:.0f} |")
    print(f"\nspeedup {naive_s / vmap_s:.2f}x, max relative error {err:.2e}, agree={ok}")
    if not ok:
        raise SystemExit("vmap and naive Fisher disagree")


if __name__ == "__main__":
    main()
