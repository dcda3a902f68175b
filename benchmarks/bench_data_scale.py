"""Benchmark: memory of the driver and of each trial as the dataset grows, in memory and memory-mapped.

For each dataset size (default 5k, 20k and 80k images at 64 px, 59 MB to 940 MB of pixels) a packed
dataset is written once; then, for each storage mode of ``data.storage``, a fresh driver process:

* loads the dataset as the search's prepare stage does (``load_packed_dataset``), puts it in the Ray
  object store once as the tune stage does (``SharedDataset``), and
* runs two concurrent trial tasks (fresh worker processes) that each get the dataset, build the
  training loader (``split_tensors`` + ``make_loader``) and draw every training batch of one epoch,
  sampling their memory as they go.

Memory is read from /proc/<pid>/status: ``VmHWM`` (peak resident set, which also counts the shared
pages a process touches: the object store's shared memory or the mapped file), and ``RssAnon``
(anonymous memory: the process's private heap, where a copy of the dataset would show). The peak of
``RssAnon`` over the epoch is the "private" figure. A trial that copied its split would grow with the
dataset; one that reads shared pages stays flat.

    .venv/bin/python benchmarks/bench_data_scale.py [--quick] [--sizes 5000,20000,80000] [--px 64]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, env_info  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODES = ("memory", "mapped")
TRIALS = 2
ATTRIBUTE = "group"


def proc_memory_mb() -> dict:
    """VmHWM (peak RSS), VmRSS, RssAnon, RssFile, RssShmem of this process, in MB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def write_dataset(path: Path, n: int, px: int, seed: int = 0) -> None:
    """A packed dataset of ``n`` smooth random images (cheap to compress, like real images)."""
    import numpy as np
    import pandas as pd

    from fairtune_ray.data.manifest import DatasetInfo, write_packed_dataset

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(64, px, px, 3), dtype=np.uint8)

    def images():
        for i in range(n):
            yield np.roll(base[i % 64], i % px, axis=0)

    split = np.where(np.arange(n) % 10 < 8, "train", np.where(np.arange(n) % 10 == 8, "val", "test"))
    manifest = pd.DataFrame({"sample_id": np.arange(n), "image": [f"{i}.png" for i in range(n)],
                             "label": rng.integers(0, 2, n), ATTRIBUTE: rng.integers(0, 2, n),
                             "patient_id": np.arange(n).astype(str), "split": split})
    info = DatasetInfo(name=f"scale-{n}", attributes={ATTRIBUTE: {0: "a", 1: "b"}})
    write_packed_dataset(str(path), manifest, images(), info, shard_size=2048)


def _trial(data, batch_size: int) -> dict:
    """What a trial does with its data before the model sees them: every training batch of one epoch."""
    import torch

    from fairtune_ray.data.loading import make_loader, split_tensors
    from fairtune_ray.search.shared_data import resolve

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = resolve(data)
    split = split_tensors(data, "train", ATTRIBUTE)
    loader = make_loader(split, batch_size, train=True, seed=0)
    peak_anon, seen, checksum = 0.0, 0, 0
    for i, (images, labels, _) in enumerate(loader):
        seen += len(labels)
        checksum += int(images[:, 0, 0, 0].sum())
        if i % 20 == 0:
            peak_anon = max(peak_anon, proc_memory_mb()["RssAnon"])
    mem = proc_memory_mb()
    return {"seconds": time.perf_counter() - t0, "images": seen, "checksum": checksum,
            "peak_anon_mb": max(peak_anon, mem["RssAnon"]), "hwm_mb": mem["VmHWM"]}


def driver(uri: str, mode: str, local_root: str, batch_size: int) -> dict:
    """One driver process: load, share once, run the trials; returns its own and the trials' memory."""
    import ray

    from fairtune_ray.data.packed import load_packed_dataset
    from fairtune_ray.search.shared_data import SharedDataset

    t0 = time.perf_counter()
    data = load_packed_dataset(uri, storage=mode, local_root=local_root)
    load_s = time.perf_counter() - t0
    after_load = proc_memory_mb()
    ray.init(num_cpus=TRIALS, include_dashboard=False, log_to_driver=False,
             object_store_memory=int(1.5 * 2**30))
    try:
        t1 = time.perf_counter()
        shared = SharedDataset(data)
        put_s = time.perf_counter() - t1
        task = ray.remote(num_cpus=1, max_calls=1)(_trial)
        trials = ray.get([task.remote(shared, batch_size) for _ in range(TRIALS)])
    finally:
        ray.shutdown()
    driver_mem = proc_memory_mb()
    return {"mode": mode, "load_s": load_s, "put_s": put_s, "driver_anon_after_load_mb": after_load["RssAnon"],
            "driver_hwm_mb": driver_mem["VmHWM"], "trials": trials,
            "pixels_mb": data.images.nbytes / 2**20}


def run_in_fresh_process(uri: str, mode: str, local_root: str, batch_size: int) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_data_scale as b; print('RESULT' + json.dumps(b.driver({uri!r}, {mode!r}, "
            f"{local_root!r}, {batch_size})))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=1200,
                         env=env)  # Ray's workers (started by this driver) import this module by name
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    raise RuntimeError(f"driver for {mode} failed:\n{out.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sizes 500 and 1000 (a smoke test)")
    ap.add_argument("--sizes", default=None, help="comma-separated image counts")
    ap.add_argument("--px", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    sizes = [int(s) for s in (args.sizes or ("500,1000" if args.quick else "5000,20000,80000")).split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_data_scale_") as tmp:
        for n in sizes:
            uri = str(Path(tmp) / f"ds{n}")
            t0 = time.perf_counter()
            write_dataset(Path(uri), n, args.px)
            write_s = time.perf_counter() - t0
            for mode in MODES:
                r = run_in_fresh_process(uri, mode, str(Path(tmp) / "local"), args.batch_size)
                r.update(n=n, write_s=write_s, trial_peak_anon_mb=max(t["peak_anon_mb"] for t in r["trials"]),
                         trial_hwm_mb=max(t["hwm_mb"] for t in r["trials"]),
                         trial_s=max(t["seconds"] for t in r["trials"]))
                rows.append(r)
    result = {"bench": "data_scale", "quick": args.quick, "px": args.px, "trials": TRIALS, "rows": rows,
              **ratios(rows), **env_info(threads=1)}
    emit(result, table(rows, result))


def ratios(rows: list[dict]) -> dict:
    """Largest over smallest dataset, per mode: the trial's private memory and the driver's peak."""
    out = {}
    for mode in MODES:
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["n"])
        if len(mine) > 1:
            out[f"{mode}_trial_private_ratio"] = round(mine[-1]["trial_peak_anon_mb"] / mine[0]["trial_peak_anon_mb"], 3)
            out[f"{mode}_driver_private_ratio"] = round(mine[-1]["driver_anon_after_load_mb"]
                                                        / mine[0]["driver_anon_after_load_mb"], 3)
    return out


def table(rows: list[dict], result: dict) -> str:
    lines = [f"{len(rows) // len(MODES)} dataset sizes at {result['px']} px, {TRIALS} concurrent trial tasks each; "
             "memory in MB (private = anonymous memory, RssAnon; peak RSS = VmHWM, which also counts shared pages).",
             "",
             "| images | pixels MB | storage | driver private after load | driver peak RSS | trial private peak | "
             "trial peak RSS | trial epoch s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['pixels_mb']:.0f} | {r['mode']} | {r['driver_anon_after_load_mb']:.0f} | "
                     f"{r['driver_hwm_mb']:.0f} | {r['trial_peak_anon_mb']:.0f} | {r['trial_hwm_mb']:.0f} | "
                     f"{r['trial_s']:.1f} |")
    lines.append("")
    lines.append("Largest / smallest dataset: " + ", ".join(f"{k} {v}" for k, v in result.items() if k.endswith("_ratio")))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
