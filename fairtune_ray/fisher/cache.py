"""The Fisher of one pre-trained model on one dataset: computed once, cached on disk, read by trials.

This is OUR formulation of the published idea of Fisher weight-importance neutralisation with
low-rank factorisation (docs/design.md#fisher-neutralisation). The paper's full text was not available to us, so the
formulas below are what we implement, not a reproduction of the paper's equations. With
theta* = the pre-trained backbone with the fitted head (``fisher.fit_head``: a seeded L2 logistic
probe on the frozen backbone's pooled features, ``fisher.head``; the Fisher-method study's models
start from it) and g a demographic group of ``data.sensitive_attribute``:

    F^g_i = mean_{(x,y) in g} ( d log p(y|x; theta*) / d theta_i )^2     per-sample grads, true labels
    F^g_n = F^g / ||F^g||_1
    I     = mean_g F^g_n,      D = max_g F^g_n - min_g F^g_n
    I'    = I * exp(-gamma * D / mean(D))

and I' is used (a) in an EWC penalty ``lambda/2 * sum_i I'_i (theta_i - theta*_i)^2``, (b) to
initialise Fisher-weighted SVD factors A (m x r), B (r x n) of chosen linear layers, and (c) D,
aggregated per mask parameter group, seeds the mask search (``fairtune_ray.search.fisher_prior``).

1. ``compute_fisher`` draws ``fisher.samples_per_group`` training samples per group and runs the
   computation in-process or as one Ray task (``fisher.task``).
2. The result is cached under ``data.cache_dir/fisher/<key>``; ``key`` is a sha256 of the
   checkpoint file's bytes (or the backbone name and config), the dataset manifest (sample ids,
   splits, labels, sensitive attribute), the drawn images, the sample count, the attribute, the
   seed, the head settings (``fisher.fit_head``, ``head_*``, the loss options the probe uses) and
   the probe's sample ids. The folder holds ``fisher_stats.parquet`` (one row per group and parameter tensor),
   ``importance.pt`` (``{"D": ..., "importance": {gamma: I'}}``), ``group_fisher.pt`` (the raw
   per-group Fisher, for a gamma that was not precomputed), ``head.pt`` (head 0's state, absent
   without ``fit_head``), ``disparity.png`` and ``meta.json`` (with the head fits' diagnostics).
   It is written to a temporary folder and renamed, so a half-written cache is never read.
3. ``training.setup.build_model`` reads I' for the trial's gamma with ``load_importance`` and
   starts every model of the study from the fitted head (``load_fitted_head``).

Caveat: unlike the backbone checkpoint (shipped through the object store, see
``models/shipping.py``), ``importance_path`` is a path on the driver's file system; on a
multi-node cluster with the Fisher method, ``data.cache_dir`` must be shared storage.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from fairtune_ray.common.errors import InputError
from fairtune_ray.common.files import atomic_path
from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.groups import coding_for
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.fisher.neutralise import neutralised_importance
from fairtune_ray.fisher.stats import fisher_statistics, plot_disparity, save_fisher_parquet
from fairtune_ray.fisher.task import probe_subset, run_fisher_task, train_subset
from fairtune_ray.models.shipping import CheckpointLike, checkpoint_sha256

__all__ = [
    "FisherResult",
    "FisherUnavailableError",
    "FISHER_VERSION",
    "compute_fisher",
    "fisher_cache_key",
    "fisher_cache_dir",
    "layer_summary",
    "load_fisher",
    "load_fitted_head",
    "load_importance",
]

#: Bump when the computation changes in a way that invalidates cached results.
FISHER_VERSION = 2  # 2: the Fisher is taken at a fitted head (fisher.fit_head)

STATS_FILE = "fisher_stats.parquet"
IMPORTANCE_FILE = "importance.pt"
GROUP_FISHER_FILE = "group_fisher.pt"
HEAD_FILE = "head.pt"
PLOT_FILE = "disparity.png"
META_FILE = "meta.json"


class FisherUnavailableError(InputError, RuntimeError):
    """A configuration uses the Fisher method but no Fisher importance is available (an InputError for
    the CLI's one-line report; still a RuntimeError, as it was before)."""


def _gamma_key(gamma: float) -> str:
    return repr(float(gamma))


@dataclass
class FisherResult:
    """Everything the Fisher computation produced, in memory, plus where it is cached."""

    key: str
    directory: Path
    fisher_by_group: dict[int, dict[str, Tensor]]
    importance: dict[float, dict[str, Tensor]]  # gamma -> I'
    D: dict[str, Tensor]
    stats: pd.DataFrame
    meta: dict = field(default_factory=dict)
    cached: bool = False

    @property
    def parquet_path(self) -> Path:
        return self.directory / STATS_FILE

    @property
    def importance_path(self) -> Path:
        return self.directory / IMPORTANCE_FILE

    @property
    def plot_path(self) -> Path:
        return self.directory / PLOT_FILE

    @property
    def mean_disparity(self) -> float:
        """Mean of D over every element of every Fisher parameter."""
        numel = sum(d.numel() for d in self.D.values())
        return sum(float(d.double().sum()) for d in self.D.values()) / max(numel, 1)


# --------------------------------------------------------------------------- keys
def _head_key(cfg: ExperimentConfig, probe: Optional[PackedDataset]) -> dict:
    """What decides the fitted head: its settings, the probe's loss options and its sample ids."""
    f = cfg.fisher
    if not f.fit_head:
        return {"fit_head": False}
    ids = probe.manifest["sample_id"].to_numpy() if probe is not None else np.zeros(0)
    return {"fit_head": True, "samples": f.head_samples, "l2": f.head_l2, "steps": f.head_steps,
            "seeds": f.head_seeds, "group_balanced": bool(cfg.data.group_balanced),
            "class_weights": bool(cfg.data.class_weights),
            "probe_ids": hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()}


def fisher_cache_key(cfg: ExperimentConfig, data: PackedDataset, checkpoint: CheckpointLike,
                     subset: Optional[PackedDataset] = None, probe: Optional[PackedDataset] = None) -> str:
    """sha256 (first 16 hex digits) of what decides the Fisher values (and the fitted head)."""
    groups = coding_for(cfg.data.sensitive_attribute, data)
    attribute = groups.cache_key  # the attribute's name for one, as before
    if subset is None:
        subset, _ = train_subset(cfg, data)
    if probe is None:
        probe = probe_subset(cfg, data)
    h = hashlib.sha256()
    if checkpoint:
        weights = {"checkpoint_sha256": checkpoint_sha256(checkpoint)}
    else:
        weights = {"backbone": cfg.backbone.name, "pretrained": cfg.backbone.pretrained}
    backbone = cfg.backbone.model_dump(exclude={"checkpoint", "pretrain_epochs"})
    header = {"v": FISHER_VERSION, "weights": weights, "backbone": backbone, "attribute": attribute,
              "samples_per_group": cfg.fisher.samples_per_group, "seed": cfg.train.seed,
              "head": _head_key(cfg, probe)}
    h.update(json.dumps(header, sort_keys=True, default=str).encode())
    cols = [c for c in ("sample_id", "split", "label", *groups.attributes) if c in data.manifest.columns]
    h.update(data.manifest[cols].to_csv(index=False).encode())
    h.update(np.ascontiguousarray(subset.images).tobytes())
    return h.hexdigest()[:16]


def fisher_cache_dir(cfg: ExperimentConfig, key: str) -> Path:
    return Path(cfg.data.cache_dir).expanduser().resolve() / "fisher" / key


# --------------------------------------------------------------------------- the cache folder
class _WrittenMeanwhile(Exception):
    """Another process completed the same cache folder while this one was computing it."""


def _save(directory: Path, result: dict, stats: pd.DataFrame, meta: dict) -> None:
    """Write the cache folder atomically; a complete one written meanwhile by another process is kept."""
    try:
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            save_fisher_parquet(stats, tmp / STATS_FILE)
            torch.save({"D": result["D"], "importance": {_gamma_key(g): v for g, v in result["importance"].items()},
                        "gammas": [float(g) for g in result["importance"]]}, tmp / IMPORTANCE_FILE)
            torch.save({"groups": {str(g): f for g, f in result["fisher"].items()}}, tmp / GROUP_FISHER_FILE)
            if result.get("head") is not None:
                torch.save({n: t.detach().cpu() for n, t in result["head"].items()}, tmp / HEAD_FILE)
            plot_disparity(stats, tmp / PLOT_FILE, title=f"Fisher disparity per layer ({meta.get('attribute', '')})")
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
            if (directory / META_FILE).is_file():
                raise _WrittenMeanwhile  # theirs may be in use already: leave it, drop ours
    except _WrittenMeanwhile:
        pass


def _load_pt(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not a zip archive (e.g. written by an old torch): load fully
        return torch.load(path, map_location="cpu", weights_only=True)


def load_fisher(directory: str | os.PathLike) -> FisherResult:
    """Read a cache folder written by ``compute_fisher``."""
    d = Path(directory)
    if not (d / META_FILE).is_file():
        raise FileNotFoundError(f"no complete Fisher cache in {d} ({META_FILE} missing)")
    meta = json.loads((d / META_FILE).read_text())
    imp = _load_pt(d / IMPORTANCE_FILE)
    groups = _load_pt(d / GROUP_FISHER_FILE)["groups"]
    return FisherResult(key=meta.get("key", d.name), directory=d,
                        fisher_by_group={int(g): f for g, f in groups.items()},
                        importance={float(g): v for g, v in imp["importance"].items()}, D=imp["D"],
                        stats=pd.read_parquet(d / STATS_FILE), meta=meta, cached=True)


# --------------------------------------------------------------------------- compute or read
def _load_cached(directory: Path, gammas: list[float]) -> FisherResult:
    """The cached result, with I' derived for any gamma added to the config since (not stored)."""
    result = load_fisher(directory)
    for g in gammas:
        if not any(math.isclose(float(g), k) for k in result.importance):
            result.importance[float(g)] = neutralised_importance(result.fisher_by_group, gamma=float(g))[0]
    return result


def _derive(fisher: dict, gammas: list[float], group_names: dict) -> tuple[dict, dict, pd.DataFrame]:
    """(I' per gamma, D, the statistics table with one importance column per non-zero gamma)."""
    importance: dict[float, dict[str, Tensor]] = {}
    D: dict[str, Tensor] = {}
    for g in gammas:
        importance[g], D = neutralised_importance(fisher, gamma=g)
    stats = fisher_statistics(fisher, group_names, gamma=0.0)
    for g in gammas:
        if g != 0.0:
            per_param = {n: float(t.double().mean()) for n, t in importance[g].items()}
            stats[f"importance_mean_gamma_{g:g}"] = stats["param"].map(per_param)
    return importance, D, stats


def compute_fisher(cfg: ExperimentConfig, data: PackedDataset, checkpoint: CheckpointLike, *,
                   use_ray: Optional[bool] = None, log: Callable[[str], None] = print) -> FisherResult:
    """Per-group Fisher at theta* (pre-trained backbone, fitted head), its neutralised importance
    and statistics; the fitted head is cached with it (``load_fitted_head``).

    Cached on disk (see the module docstring); a second call with the same weights, data and
    settings reads the cache. ``use_ray`` (default: whether Ray is initialised) runs the
    computation as one Ray task, on a GPU when the cluster has one.
    """
    subset, _ = train_subset(cfg, data)
    probe = probe_subset(cfg, data)
    key = fisher_cache_key(cfg, data, checkpoint, subset, probe)
    directory = fisher_cache_dir(cfg, key)
    if (directory / META_FILE).is_file():
        result = _load_cached(directory, cfg.fisher.gamma)
        log(f"Fisher: cached {directory}")
        return result
    if use_ray is None:
        import ray  # lazy: Ray only to ask whether it runs; trials import this module for load_importance

        use_ray = ray.is_initialized()
    groups = coding_for(cfg.data.sensitive_attribute, data)
    attribute = groups.attribute
    counts = pd.Series(groups.encode(subset.manifest)).value_counts().sort_index()
    log(f"Fisher: {len(subset.manifest)} training samples ({', '.join(f'{g}: {n}' for g, n in counts.items())}) "
        f"by {attribute}, {'as a Ray task' if use_ray else 'in-process'}")
    out = run_fisher_task(cfg, subset, checkpoint, use_ray, probe=probe)
    fisher = out["fisher"]
    gammas = list(dict.fromkeys(float(g) for g in [0.0, *cfg.fisher.gamma]))
    group_names = groups.names
    importance, D, stats = _derive(fisher, gammas, group_names)
    meta = {"key": key, "version": FISHER_VERSION, "attribute": attribute, "checkpoint": str(checkpoint) if checkpoint else None,
            "backbone": cfg.backbone.name, "samples_per_group": cfg.fisher.samples_per_group,
            "samples": {str(group_names.get(int(g), g)): int(n) for g, n in counts.items()},
            "gammas": gammas, "seed": cfg.train.seed, "seconds": out["seconds"], "device": out["device"],
            "where": out["where"], "n_params": sum(t.numel() for t in D.values()), "created": time.time(),
            "head": {**_head_key(cfg, probe), "probe_samples": 0 if probe is None else len(probe.manifest),
                     "seconds": out.get("head_seconds", 0.0), "fits": out.get("head_fit", [])}}
    _save(directory, {"fisher": fisher, "importance": importance, "D": D, "head": out.get("head")}, stats, meta)
    fitted = f", head fitted in {out.get('head_seconds', 0.0):.1f}s" if out.get("head") is not None else ""
    log(f"Fisher: computed in {out['seconds']:.1f}s{fitted} on {out['device']} ({out['where']}) -> {directory}")
    return FisherResult(key, directory, fisher, importance, D, stats, meta, cached=False)


# --------------------------------------------------------------------------- readers
def load_importance(path: Optional[str], gamma: float) -> dict[str, Tensor]:
    """I' at ``gamma`` from a cached ``importance.pt`` (computed from the per-group Fisher
    beside it when that gamma was not precomputed)."""
    if not path:
        raise FisherUnavailableError(
            "this configuration uses the Fisher method (EWC penalty or low-rank factorisation), but no "
            "Fisher importance is available: fisher.importance_path is not set. The search sets it after "
            "computing the Fisher (search.method: fisher or both); outside a search, run "
            "`fairtune-ray fisher <config>` and pass --set fisher.importance_path=<the printed importance.pt>")
    p = Path(path)
    if not p.is_file():
        raise FisherUnavailableError(f"fisher.importance_path: file '{p}' does not exist on this node "
                                     "(on a multi-node cluster data.cache_dir must be storage every node sees, "
                                     "see docs/distributed.md; otherwise, was the Fisher cache deleted?)")
    stored = _load_pt(p)
    for k, v in stored["importance"].items():
        if math.isclose(float(k), float(gamma), rel_tol=1e-9, abs_tol=1e-12):
            return dict(v)
    group_file = p.parent / GROUP_FISHER_FILE
    if not group_file.is_file():
        raise FisherUnavailableError(f"gamma={gamma} was not precomputed in {p} and {group_file} is missing")
    groups = {int(g): f for g, f in _load_pt(group_file)["groups"].items()}
    return neutralised_importance(groups, gamma=float(gamma))[0]


def load_fitted_head(path: Optional[str | os.PathLike]) -> Optional[dict[str, Tensor]]:
    """The fitted head (``{"weight", "bias"}``) cached beside ``importance.pt`` (``path`` is that file
    or its folder); None when ``path`` is unset or the Fisher was computed without ``fisher.fit_head``.
    A set path whose cache is missing is an error: the study's models would not start alike."""
    if not path:
        return None
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if not (folder / META_FILE).is_file():
        raise FisherUnavailableError(f"fisher.importance_path: no Fisher cache at '{folder}' on this node "
                                     "(on a multi-node cluster data.cache_dir must be storage every node sees, "
                                     "see docs/distributed.md; otherwise, was the Fisher cache deleted?)")
    head_file = folder / HEAD_FILE
    if not head_file.is_file():
        return None
    return dict(torch.load(head_file, map_location="cpu", weights_only=True))


def layer_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """One row per layer: numel, numel-weighted mean disparity, share of the total importance I
    (gamma = 0; sums to 1 over all layers), sorted by disparity, highest first."""
    per_param = stats.drop_duplicates("param")[["layer", "param", "numel", "disparity_mean", "importance_mean"]]
    per_param = per_param.assign(d_sum=per_param["disparity_mean"] * per_param["numel"],
                                 i_sum=per_param["importance_mean"] * per_param["numel"])
    agg = per_param.groupby("layer", sort=False).agg(numel=("numel", "sum"), d_sum=("d_sum", "sum"),
                                                     i_sum=("i_sum", "sum"))
    total_i = float(agg["i_sum"].sum()) or 1.0
    out = pd.DataFrame({"layer": agg.index, "numel": agg["numel"].astype(int).to_numpy(),
                        "mean_disparity": (agg["d_sum"] / agg["numel"].clip(lower=1)).to_numpy(),
                        "importance_share": (agg["i_sum"] / total_i).to_numpy()})
    return out.sort_values("mean_disparity", ascending=False, kind="stable").reset_index(drop=True)
