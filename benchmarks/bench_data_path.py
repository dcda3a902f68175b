"""Benchmark: per-trial time to get the training data ready, by where it comes from.

The same synthetic images (all splits), made ready as the inner loop needs them (one uint8
``SplitTensors`` per split: train, val, test), from

* packed shards: ``load_packed_dataset`` (Parquet) + ``split_tensors``, in the calling process;
* the Ray object store: ``ray.put`` once in the driver, then in a Ray task (a warm worker, as a
  trial is) ``ray.get`` + ``split_tensors`` (this is what ``tune.with_parameters`` gives a trial);
  timed inside the task, and as the driver's round trip;
* image files: the same images written as PNG and as JPEG (quality 95) files, each decoded with
  PIL in one process (a trial has one CPU) and stacked into the same tensors.

The 32 px set is the synthetic benchmark's own; the 128 px set (the same images upsampled) shows
how decoding scales with pixels. Median of ``--repeats`` timed calls after one warm-up each.

    .venv/bin/python benchmarks/bench_data_path.py [--quick] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BENCH_SETTINGS, emit, env_info, init_local_ray, quiet_stdout  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPLITS = ("train", "val", "test")


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (page cache, imports)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def ready_from_packed(path: str, attribute: str):
    from fairtune_ray.data.loading import split_tensors
    from fairtune_ray.data.packed import load_packed_dataset

    data = load_packed_dataset(path)
    return {s: split_tensors(data, s, attribute) for s in SPLITS}


def write_files(data, folder: str, fmt: str) -> list[str]:
    from PIL import Image

    paths = []
    ext = "png" if fmt == "PNG" else "jpg"
    kw = {"quality": 95} if fmt == "JPEG" else {}
    for i, img in enumerate(data.images):
        p = os.path.join(folder, f"{i:06d}.{ext}")
        Image.fromarray(img).save(p, fmt, **kw)
        paths.append(p)
    return paths


def ready_from_files(paths: list[str], manifest, attribute: str):
    import numpy as np
    import torch
    from PIL import Image

    from fairtune_ray.data.loading import SplitTensors
    from fairtune_ray.data.pixels import ImageRows

    out = {}
    for s in SPLITS:
        rows = np.flatnonzero((manifest["split"] == s).to_numpy())
        imgs = np.stack([np.asarray(Image.open(paths[i]).convert("RGB")) for i in rows])
        out[s] = SplitTensors(ImageRows(imgs),
                              torch.tensor(manifest["label"].to_numpy()[rows], dtype=torch.long),
                              torch.tensor(manifest[attribute].to_numpy()[rows], dtype=torch.long))
    return out


def upsampled(data, size: int, folder: str):
    """The same dataset with images resized to ``size`` px, written as packed shards."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from fairtune_ray.data.manifest import DatasetInfo, write_packed_dataset
    from fairtune_ray.data.packed import PackedDataset

    x = torch.from_numpy(np.asarray(data.images)).permute(0, 3, 1, 2).float()
    chunks = [F.interpolate(x[i:i + 256], size=(size, size), mode="bilinear", align_corners=False)
              for i in range(0, len(x), 256)]
    imgs = torch.cat(chunks).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    info = DatasetInfo.from_json(data.info.to_json())
    manifest = data.manifest.drop(columns=["shard"], errors="ignore")
    write_packed_dataset(folder, manifest, iter(imgs), info)
    return folder, PackedDataset(manifest, imgs, info)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke test (300 images at 32 px, 1 repeat)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--n-samples", type=int, default=None)
    ap.add_argument("--sizes", default=None, help="comma-separated image sizes (default 32,128; 32 with --quick)")
    ap.add_argument("--cache-dir", default=str(REPO / ".fairtune_cache"))
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 5)
    n_samples = args.n_samples or (300 if args.quick else 2000)
    sizes = [int(s) for s in (args.sizes or ("32" if args.quick else "32,128")).split(",")]

    rows = []
    with quiet_stdout(), tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        import ray
        import torch

        from fairtune_ray.config import load_config
        from fairtune_ray.data.loading import split_tensors
        from fairtune_ray.data.packed import load_packed_dataset
        from fairtune_ray.data.synthetic import ensure_synthetic

        torch.set_num_threads(1)
        cfg = load_config(None, overrides={**BENCH_SETTINGS, "data.synthetic.n_samples": n_samples, "data.cache_dir": args.cache_dir})
        attribute = cfg.data.sensitive_attribute
        base_path = ensure_synthetic(cfg.data.synthetic, cfg.data.cache_dir)
        base = load_packed_dataset(base_path)
        init_local_ray(2)

        @ray.remote(num_cpus=1)
        def ready_in_task(refs) -> float:
            t0 = time.perf_counter()
            data = ray.get(refs[0])
            {s: split_tensors(data, s, attribute) for s in SPLITS}
            return time.perf_counter() - t0

        for size in sizes:
            if size == base.info.image_size:
                path, data = base_path, base
            else:
                path, data = upsampled(base, size, os.path.join(tmp, f"packed-{size}"))
            mb = data.images.nbytes / 2**20
            packed_s = timed(lambda: ready_from_packed(path, attribute), repeats)
            t0 = time.perf_counter()
            ref = ray.put(data)
            put_s = time.perf_counter() - t0
            ray.get(ready_in_task.remote([ref]))  # start the worker, as a running trial already is
            in_task, round_trip = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                in_task.append(ray.get(ready_in_task.remote([ref])))
                round_trip.append(time.perf_counter() - t0)
            del ref
            row = {"size": size, "n_images": len(data.images), "mb": round(mb, 1), "packed_s": packed_s,
                   "objstore_task_s": statistics.median(in_task), "objstore_roundtrip_s": statistics.median(round_trip),
                   "put_once_s": put_s}
            for fmt in ("PNG", "JPEG"):
                folder = os.path.join(tmp, f"{fmt.lower()}-{size}")
                os.makedirs(folder)
                paths = write_files(data, folder, fmt)
                row[f"{fmt.lower()}_mb_on_disk"] = round(sum(os.path.getsize(p) for p in paths) / 2**20, 1)
                row[f"{fmt.lower()}_s"] = timed(lambda: ready_from_files(paths, data.manifest, attribute), repeats)
            row["png_vs_packed"] = row["png_s"] / row["packed_s"]
            row["jpeg_vs_packed"] = row["jpeg_s"] / row["packed_s"]
            row["jpeg_vs_objstore"] = row["jpeg_s"] / row["objstore_task_s"]
            rows.append({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})
            print(rows[-1], file=sys.stderr)
        ray.shutdown()

    result = {"bench": "data_path", "quick": args.quick, "repeats": repeats, "rows": rows, **env_info(1)}
    lines = [f"Time until a trial holds train/val/test as uint8 tensors; median of {repeats}; one process per trial.",
             "", "| images | uint8 MB | packed shards (Parquet) s | object store, in task s (driver round trip) | "
                 "PNG files s | JPEG files s | JPEG / packed | JPEG / object store |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n_images']} x {r['size']} px | {r['mb']} | {r['packed_s']:.4f} | {r['objstore_task_s']:.4f} "
                     f"({r['objstore_roundtrip_s']:.4f}) | {r['png_s']:.3f} | {r['jpeg_s']:.3f} | "
                     f"{r['jpeg_vs_packed']:.1f}x | {r['jpeg_vs_objstore']:.1f}x |")
    lines.append("")
    lines.append("`ray.put` once in the driver: " + ", ".join(f"{r['put_once_s']:.3f} s at {r['size']} px" for r in rows) + ".")
    emit(result, "\n".join(lines))


if __name__ == "__main__":
    main()
