"""GPU check: the project's trainer against a bare PyTorch loop, and four 0.25-GPU trials against one.

Runs on a GPU machine that has neither Ray nor MLflow: it calls the inner loop directly
(``fairtune_ray.training.loop.fine_tune`` and ``fairtune_ray.training.process``), from a copy of the
working tree (the repository root is put on ``sys.path``; nothing is installed). ViT-S/16
(``vit_small_patch16_224``, random init, no download) at 224 px, synthetic uint8 images, bf16.

(a) throughput, one process: ``fine_tune`` (training images/s, per-epoch validation excluded, and
    images/s of its whole wall time) against a bare loop (timm model, AdamW, bf16 autocast, the same
    batch size and images), interleaved, median of ``--repeats``.
(b) packing: one trial process with the whole GPU and 4 threads (the old `{cpu: 4, gpu: 0.25}`
    packing ran one trial per g5.xlarge) against ``--trials`` concurrent processes at `{cpu: 1, gpu: 0.25}`,
    each capped by ``cap_gpu_memory`` at a quarter of a 23028 MiB A10G minus the CUDA context
    (``--emulate-gpu-mib 0``: a quarter of this GPU). Trials per hour (process start to exit), peak
    ``torch.cuda.max_memory_allocated``/``reserved`` per process, the process's total from
    ``nvidia-smi`` (per PID, else the device's peak minus its idle use, divided by the processes) and
    what lies outside the allocator (total - reserved: the CUDA context, to check
    ``trial.resources.cuda_context_mb``).
(f) Fisher: the per-group Fisher pass (``fairtune_ray.fisher.per_group_fisher``, batched backward with
    per-sample closed forms, and vmap(grad)) against one training epoch over the same samples (fp32,
    AdamW, the same batch size), one process, best of ``--repeats``.

Packages: torch, timm, accelerate, numpy, pandas, pyarrow, scikit-learn, scipy, pyyaml, pillow,
safetensors, tqdm (all in the device image) and pydantic >= 2.5 with pydantic-core, annotated-types,
typing-inspection and typing-extensions >= 4.16 (carried as wheels, see README.md here).

    python3 benchmarks/gpu/gpu_check.py [--out DIR]          # a few minutes on one GPU; --budget-s 450 caps it
    python3 benchmarks/gpu/gpu_check.py --cpu-smoke --block-imports ray,mlflow   # CPU, tiny, ~20 s

Prints one JSON line (``{"bench": "gpu_check", ...}``) and a markdown table, and writes both, with
the child processes' logs, to ``--out`` (default: $OUT, else ./gpu_check_results).
"""
from __future__ import annotations

import sys


def _block_imports(argv: list[str]) -> list[str]:
    """``--block-imports ray,mlflow``: make those imports fail in this process (and, passed on, in
    every child), proving the trainer does not need them. Done before anything else is imported."""
    if "--block-imports" not in argv:
        return []
    names = [n for n in argv[argv.index("--block-imports") + 1].split(",") if n]
    for name in names:
        sys.modules[name] = None  # `import name` now raises ImportError
    return names


BLOCKED = _block_imports(sys.argv)

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
MIB = 1 << 20
A10G_MIB = 23028  # nvidia-smi's total for the A10G of a g5.xlarge

# (a): a_train images, a_epochs per run, repeats; (b): b_train images, b_epochs per trial, trials at once
GPU_SIZES = {"image_size": 224, "batch_size": 64, "a_train": 2048, "a_val": 256, "a_epochs": 2, "repeats": 3,
             "b_train": 4096, "b_val": 512, "b_epochs": 4, "trials": 4}
SMOKE_SIZES = {"image_size": 32, "batch_size": 8, "a_train": 16, "a_val": 16, "a_epochs": 1, "repeats": 1,
               "b_train": 16, "b_val": 16, "b_epochs": 1, "trials": 2}


# --------------------------------------------------------------------------- child: shared set-up
def synthetic_data(n_train: int, n_val: int, size: int, seed: int):
    """A PackedDataset of random uint8 images, both labels and two groups in every split."""
    import numpy as np
    import pandas as pd

    from fairtune_ray.data.manifest import DatasetInfo

    try:
        from fairtune_ray.data.packed import PackedDataset
    except ImportError:  # before data/packed.py split it off the manifest module
        from fairtune_ray.data.manifest import PackedDataset

    n = n_train + n_val
    pool = np.random.default_rng(seed).integers(0, 256, size=(min(n, 256), size, size, 3), dtype=np.uint8)
    i = np.arange(n)
    manifest = pd.DataFrame({"sample_id": [f"s{k}" for k in i], "label": i % 2, "group": (i // 2) % 2,
                             "split": ["train"] * n_train + ["val"] * n_val, "patient_id": i})
    info = DatasetInfo(name="gpu-check", attributes={"group": {0: "a", 1: "b"}}, image_size=size)
    return PackedDataset(manifest, pool[i % len(pool)], info)


def experiment(args, epochs: int, cpu: float, gpu: float):
    from fairtune_ray.config import load_config

    return load_config(None, overrides={
        "data.source": "gpu-check", "data.sensitive_attribute": "group", "data.batch_size": args.batch_size,
        "data.eval_batch_size": 4 * args.batch_size, "data.augment": False, "data.group_balanced": False,
        "backbone.name": args.model, "backbone.pretrained": False, "backbone.image_size": args.image_size,
        "train.epochs": epochs, "train.lr": 1e-4, "train.warmup_epochs": 0,
        "train.mixed_precision": "no" if args.cpu_smoke else "bf16",
        "trial.resources.cpu": cpu, "trial.resources.gpu": gpu})


def memory_stats() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    free, total = torch.cuda.mem_get_info()
    return {"max_allocated_mib": torch.cuda.max_memory_allocated() / MIB,
            "max_reserved_mib": torch.cuda.max_memory_reserved() / MIB,
            "device_used_mib": (total - free) / MIB, "gpu": torch.cuda.get_device_name(0)}


def reset_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# --------------------------------------------------------------------------- child (a): throughput
def bare_loop(args, data, epochs: int) -> dict:
    """What one would write by hand: timm model, AdamW (no decay on norms and biases), bf16
    autocast, batches gathered from one uint8 tensor, pinned, normalised on the device."""
    import numpy as np
    import timm
    import torch
    import torch.nn.functional as F

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, num_classes=1, img_size=args.image_size).to(device)
    dc = timm.data.resolve_data_config({}, model=model)
    mean, std = (torch.tensor(dc[k], device=device).view(1, -1, 1, 1) for k in ("mean", "std"))
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": 0.05},
                             {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}], lr=1e-4)
    train = data.split("train")
    images = torch.from_numpy(np.ascontiguousarray(np.asarray(train.images))).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(train.manifest["label"].to_numpy(), dtype=torch.float32)
    n, bs = len(labels), args.batch_size
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            x = images[idx].pin_memory() if device.type == "cuda" else images[idx]
            x = (x.to(device, non_blocking=True).float().div_(255) - mean) / std
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.cpu_smoke):
                logits = model(x).float().view(-1)
            loss = F.binary_cross_entropy_with_logits(logits, labels[idx].to(device))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"train_sps": n * epochs / (time.perf_counter() - t0), **memory_stats()}


def project_loop(args, data, epochs: int) -> dict:
    from fairtune_ray.training.loop import fine_tune
    from fairtune_ray.training.spec import TrialSpec

    cfg = experiment(args, epochs, cpu=args.threads, gpu=1.0)
    fit = fine_tune(cfg, TrialSpec(mask="full", lr=cfg.train.lr, seed=0), data, None, final_splits=())
    n_train = int((data.manifest["split"] == "train").sum())
    return {"train_sps": fit.train_samples_per_s, "wall_sps": n_train * epochs / fit.seconds, **memory_stats()}


def run_throughput(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    data = synthetic_data(args.a_train, args.a_val, args.image_size, seed=0)
    if not args.cpu_smoke:  # warm-up: kernels, autotuning, allocator
        project_loop(args, data, 1), bare_loop(args, data, 1)
    project, bare = [], []
    for _ in range(args.repeats):  # interleaved, so a slow spell hits both alike
        reset_memory()
        project.append(project_loop(args, data, args.a_epochs))
        reset_memory()
        bare.append(bare_loop(args, data, args.a_epochs))
    med = statistics.median
    return {"project_train_sps": med(p["train_sps"] for p in project),
            "project_wall_sps": med(p["wall_sps"] for p in project),
            "bare_sps": med(b["train_sps"] for b in bare),
            "project_max_reserved_mib": project[-1].get("max_reserved_mib"),
            "bare_max_reserved_mib": bare[-1].get("max_reserved_mib"),
            "all_project_train_sps": [p["train_sps"] for p in project], "all_bare_sps": [b["train_sps"] for b in bare],
            "torch": torch.__version__, "gpu": project[-1].get("gpu", "none")}


# --------------------------------------------------------------------------- child (f): Fisher
def run_fisher(args) -> dict:
    """The Fisher pass the search runs once per study, against one training epoch over its samples."""
    import copy

    import timm
    import torch

    from fairtune_ray.fisher import fisher_param_names, per_group_fisher

    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, img_size=args.image_size, num_classes=1).to(dev)
    n, chunk = (16, 8) if args.cpu_smoke else (256, 32)
    images = torch.randn(n, 3, args.image_size, args.image_size, device=dev)
    labels, groups = torch.arange(n, device=dev) % 2, (torch.arange(n, device=dev) // 2) % 2
    names = fisher_param_names(model)

    def timed(fn) -> float:
        fn()  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            torch.cuda.synchronize() if dev.type == "cuda" else None
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize() if dev.type == "cuda" else None
            best = min(best, time.perf_counter() - t0)
        return best

    def fisher(method: str):
        return per_group_fisher(model, images, labels, groups, param_names=names, samples_per_group=n // 2,
                                chunk_size=chunk, method=method, device=dev)

    def epoch():
        m = copy.deepcopy(model).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        for start in range(0, n, args.batch_size):
            opt.zero_grad(set_to_none=True)
            out = m(images[start:start + args.batch_size]).squeeze(1)
            torch.nn.functional.binary_cross_entropy_with_logits(out, labels[start:start + args.batch_size].float()).backward()
            opt.step()

    reset_memory()
    hooks_s, vmap_s, epoch_s = timed(lambda: fisher("hooks")), timed(lambda: fisher("vmap")), timed(epoch)
    return {"samples": n, "chunk_size": chunk, "hooks_s": hooks_s, "vmap_s": vmap_s, "epoch_s": epoch_s,
            "hooks_over_epoch": hooks_s / epoch_s, "vmap_over_epoch": vmap_s / epoch_s, **memory_stats(),
            "torch": torch.__version__}


# --------------------------------------------------------------------------- child (b): one trial
def run_trial(args) -> dict:
    """One trial process as Ray would start it: threads and memory cap from trial.resources."""
    import torch

    from fairtune_ray.training.loop import fine_tune
    from fairtune_ray.training.process import (
        allocator_cap_bytes,
        cap_gpu_memory,
        set_trial_threads,
    )
    from fairtune_ray.training.spec import TrialSpec

    cfg = experiment(args, args.b_epochs, cpu=args.cpu, gpu=args.gpu)
    set_trial_threads(cfg)
    share_of = args.emulate_gpu_mib * MIB or None
    res = cfg.trial.resources
    capped = cap_gpu_memory(res.gpu, res.cuda_context_mb, share_of_bytes=share_of)
    out = {"pid": os.getpid(), "threads": torch.get_num_threads(), "capped": capped, "cap_mib": None, "oom": None,
           "torch": torch.__version__}
    if capped:
        total = share_of or torch.cuda.get_device_properties(0).total_memory
        out["cap_mib"] = allocator_cap_bytes(res.gpu, total, res.cuda_context_mb) / MIB
    data = synthetic_data(args.b_train, args.b_val, args.image_size, seed=args.seed)
    try:
        fit = fine_tune(cfg, TrialSpec(mask="full", lr=cfg.train.lr, seed=args.seed), data, None, final_splits=())
        out.update(train_sps=fit.train_samples_per_s, fit_s=fit.seconds)
    except torch.cuda.OutOfMemoryError as err:  # over the cap: a finding, not a crash
        out["oom"] = str(err).splitlines()[0][:300]
    return {**out, **memory_stats()}


# --------------------------------------------------------------------------- parent: GPU memory
def _smi(query: str) -> list[list[str]]:
    out = subprocess.run(["nvidia-smi", query, "--format=csv,noheader,nounits"], capture_output=True,
                         text=True, timeout=10, check=False).stdout
    return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]


class GpuSampler(threading.Thread):
    """Polls nvidia-smi (the parent never touches CUDA, so its own use is nil): the device's used
    memory and each process's, keeping the peaks of the phase that is running."""

    def __init__(self, period_s: float = 0.5):
        super().__init__(daemon=True)
        self.enabled = shutil.which("nvidia-smi") is not None
        self.period_s, self.stop = period_s, threading.Event()
        self.device_peak, self.per_pid = 0.0, {}

    def read(self) -> tuple[float, dict[int, float]]:
        used = sum(float(r[0]) for r in _smi("--query-gpu=memory.used"))
        apps = {int(r[0]): float(r[1]) for r in _smi("--query-compute-apps=pid,used_memory")
                if len(r) == 2 and r[0].isdigit() and r[1].replace(".", "").isdigit()}
        return used, apps

    def reset(self) -> float:
        """Start a phase: clear the peaks; returns the device's idle use (MiB)."""
        self.device_peak, self.per_pid = 0.0, {}
        try:
            return self.read()[0] if self.enabled else 0.0
        except (OSError, subprocess.SubprocessError, ValueError):
            return 0.0

    def run(self) -> None:
        while self.enabled and not self.stop.wait(self.period_s):
            try:
                used, apps = self.read()
            except (OSError, subprocess.SubprocessError, ValueError):
                continue
            self.device_peak = max(self.device_peak, used)
            for pid, mib in apps.items():
                self.per_pid[pid] = max(self.per_pid.get(pid, 0.0), mib)


# --------------------------------------------------------------------------- parent: phases
def child_command(args, role: str, result: Path, extra: list[str]) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--result", str(result)]
    for key in ("model", "image_size", "batch_size", "a_train", "a_val", "a_epochs", "repeats", "b_train", "b_val",
                "b_epochs", "threads", "emulate_gpu_mib"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--cpu-smoke"] * args.cpu_smoke + (["--block-imports", ",".join(BLOCKED)] if BLOCKED else [])
    return cmd + extra


def run_phase(name: str, commands: list[tuple[list[str], int]], sampler: GpuSampler, work: Path,
              timeout_s: float, log) -> dict:
    """Start the child processes together, wait for all (killing them past the timeout), collect
    their JSON results, and the phase's wall time and GPU memory peaks."""
    idle = sampler.reset()
    t0, procs = time.perf_counter(), []
    with contextlib.ExitStack() as files:
        for i, (cmd, threads) in enumerate(commands):
            env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads))
            if "--cpu-smoke" in cmd:
                env["CUDA_VISIBLE_DEVICES"] = ""
            child_log = work / f"{name}-{i}.log"
            out = files.enter_context(open(child_log, "w"))
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
            procs.append((proc, child_log, Path(cmd[cmd.index("--result") + 1])))
        for proc, _, _ in procs:
            try:
                proc.wait(timeout=max(1.0, timeout_s - (time.perf_counter() - t0)))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - t0
    results = []
    for proc, child_log, result in procs:
        log.write(f"===== {name}: {child_log.name} (exit {proc.returncode})\n{child_log.read_text()}\n")
        data = json.loads(result.read_text()) if result.is_file() else {}
        results.append({**data, "exit": proc.returncode, "pid": proc.pid, "nvidia_smi_mib": sampler.per_pid.get(proc.pid)})
    return {"wall_s": wall, "results": results, "device_idle_mib": idle, "device_peak_mib": sampler.device_peak}


def process_totals(phase: dict) -> None:
    """Each process's GPU memory: nvidia-smi's per-PID figure, else an equal part of the device's
    rise over idle; what lies outside torch's allocator is that total minus its peak reservation."""
    results = phase["results"]
    rise = max(0.0, phase["device_peak_mib"] - phase["device_idle_mib"]) if phase["device_peak_mib"] else None
    for r in results:
        total = r.get("nvidia_smi_mib") or (rise / len(results) if rise else None)
        r["process_total_mib"] = total
        reserved = r.get("max_reserved_mib")
        r["outside_allocator_mib"] = total - reserved if total and reserved is not None else None


def packing_summary(single: dict, many: dict) -> dict:
    def ok(phase: dict) -> bool:
        return all(r["exit"] == 0 and not r.get("oom") and "fit_s" in r for r in phase["results"])

    n = len(many["results"])
    single_tph = 3600 / single["wall_s"] if ok(single) else None
    many_tph = n * 3600 / many["wall_s"] if ok(many) else None
    return {"single_trials_per_hour": single_tph, "concurrent_trials_per_hour": many_tph,
            "concurrent_vs_single": many_tph / single_tph if single_tph and many_tph else None,
            "single": single, "concurrent": many}


# --------------------------------------------------------------------------- parent: report
def _f(x, fmt: str = ".0f") -> str:
    return "-" if x is None else format(x, fmt)


def _mean(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.mean(values) if values else None


def table(result: dict) -> str:
    lines = [(f"GPU check: {result['model']} at {result['image_size']} px, batch {result['batch_size']}, "
              f"{result.get('gpu', 'no GPU')}, torch {result.get('torch', '?')}; {result['seconds']:.0f} s in all."), ""]
    a = result.get("throughput")
    if a and "bare_sps" in a:
        lines += ["| (a) loop | training images/s | ratio to bare |", "|---|---|---|",
                  f"| bare PyTorch (bf16 autocast, AdamW) | {a['bare_sps']:.0f} | 1.00 |",
                  (f"| project `fine_tune`, training only | {a['project_train_sps']:.0f} | "
                   f"{a['project_train_sps'] / a['bare_sps']:.2f} |"),
                  (f"| project `fine_tune`, whole wall time (build, validation) | {a['project_wall_sps']:.0f} | "
                   f"{a['project_wall_sps'] / a['bare_sps']:.2f} |"), ""]
    b = result.get("packing")
    if b:
        lines += [("| (b) trials | trials/h | wall s | fit s | train img/s per trial | peak allocated MiB "
                   "| peak reserved MiB | process total MiB | outside allocator MiB | cap MiB | OOM |"),
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, key, tph in (("1 x {cpu: 4, gpu: 1}", "single", "single_trials_per_hour"),
                                (f"{len(b['concurrent']['results'])} x {{cpu: 1, gpu: 0.25}}", "concurrent",
                                 "concurrent_trials_per_hour")):
            rows = b[key]["results"]
            lines.append(f"| {label} | {_f(b[tph])} | {b[key]['wall_s']:.0f} | {_f(_mean(rows, 'fit_s'), '.1f')} | "
                         f"{_f(_mean(rows, 'train_sps'))} | "
                         f"{_f(_mean(rows, 'max_allocated_mib'))} | {_f(_mean(rows, 'max_reserved_mib'))} | "
                         f"{_f(_mean(rows, 'process_total_mib'))} | {_f(_mean(rows, 'outside_allocator_mib'))} | "
                         f"{_f(_mean(rows, 'cap_mib'))} | {sum(bool(r.get('oom')) for r in rows)} |")
        lines += ["", (f"Concurrent vs single, trials per hour: {_f(b['concurrent_vs_single'], '.2f')}x "
                       "(means over processes; 'outside allocator' = nvidia-smi total - peak reserved: the CUDA context).")]
    f = result.get("fisher")
    if f and "hooks_s" in f:
        lines += ["", f"| (f) pass over {f['samples']} samples | s | vs one training epoch |", "|---|---|---|",
                  f"| Fisher, batched backward + per-sample closed forms | {f['hooks_s']:.3f} | {f['hooks_over_epoch']:.2f} |",
                  f"| Fisher, vmap(grad) | {f['vmap_s']:.3f} | {f['vmap_over_epoch']:.2f} |",
                  f"| one training epoch (fp32, batch {result['batch_size']}) | {f['epoch_s']:.3f} | 1.00 |"]
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_results", help="results folder")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU, no GPU parts")
    ap.add_argument("--block-imports", default="", help="modules whose import must fail, e.g. ray,mlflow")
    ap.add_argument("--phases", default="a,b,f", help="a: trainer vs bare loop; b: 4 trials vs 1; f: Fisher vs an epoch")
    ap.add_argument("--budget-s", type=float, default=450, help="all phases together; children are killed past it")
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--threads", type=int, default=4, help="torch threads in (a) and of the single trial in (b)")
    ap.add_argument("--emulate-gpu-mib", type=int, default=A10G_MIB,
                    help="trials take their share of this many MiB (the A10G); 0 = of this GPU")
    for key, value in GPU_SIZES.items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"default {value} (smoke: {SMOKE_SIZES[key]})")
    ap.add_argument("--role", choices=("parent", "throughput", "trial", "fisher"), default="parent", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--gpu", type=float, default=0.25, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for key, value in (SMOKE_SIZES if args.cpu_smoke else GPU_SIZES).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.cpu_smoke:
        args.emulate_gpu_mib = 0
    return args


def run_all(args, work: Path, log) -> dict:
    sampler = GpuSampler()
    sampler.start()
    deadline = time.perf_counter() + args.budget_s
    left = lambda share: max(5.0, share * (deadline - time.perf_counter()))
    result: dict = {}
    if "a" in args.phases:
        phase = run_phase("throughput", [(child_command(args, "throughput", work / "a.json", []), args.threads)],
                          sampler, work, left(0.35), log)
        result["throughput"] = {**phase["results"][0], "wall_s": phase["wall_s"]}
    if "b" in args.phases:
        single = run_phase("single", [(child_command(args, "trial", work / "b1.json",
                                                     ["--cpu", str(args.threads), "--gpu", "1"]), args.threads)],
                           sampler, work, left(0.35), log)
        many = run_phase("concurrent", [(child_command(args, "trial", work / f"b4-{i}.json",
                                                       ["--cpu", "1", "--gpu", "0.25", "--seed", str(i)]), 1)
                                        for i in range(args.trials)], sampler, work, left(1.0), log)
        for phase in (single, many):
            process_totals(phase)
        result["packing"] = packing_summary(single, many)
    if "f" in args.phases:
        phase = run_phase("fisher", [(child_command(args, "fisher", work / "f.json", []), args.threads)],
                          sampler, work, left(1.0), log)
        result["fisher"] = phase["results"][0]
    sampler.stop.set()
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.role != "parent":
        out = {"throughput": run_throughput, "trial": run_trial, "fisher": run_fisher}[args.role](args)
        Path(args.result).write_text(json.dumps(out))
        return 0
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, open(out / "children.log", "w") as log:
        result = run_all(args, Path(tmp), log)
    children = [c for c in [result.get("throughput"), result.get("fisher")] + [r for k in ("single", "concurrent")
                                                        for r in result.get("packing", {}).get(k, {}).get("results", [])] if c]
    first = next((c for c in children if c.get("torch")), {})
    result = {"bench": "gpu_check", "cpu_smoke": args.cpu_smoke, "blocked_imports": BLOCKED, "model": args.model,
              "image_size": args.image_size, "batch_size": args.batch_size, "emulate_gpu_mib": args.emulate_gpu_mib,
              "gpu": first.get("gpu", "none"), "torch": first.get("torch"),
              "seconds": time.perf_counter() - t0, **result,
              "failed": [c.get("pid") for c in children if c.get("exit", 0) != 0]}
    text = table(result)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    (out / "gpu_check.md").write_text(text + "\n")
    print(json.dumps(result), text, sep="\n\n", flush=True)
    return 1 if result["failed"] or not children else 0


if __name__ == "__main__":
    sys.exit(main())
