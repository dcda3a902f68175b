"""The Fisher method inside the search: compute once, cache, log, seed, and hand to the trials.

This is OUR formulation of the published idea of Fisher weight-importance neutralisation with
low-rank factorisation (DESIGN 2.3). The paper's full text was not available to us, so the
formulas below are what we implement, not a reproduction of the paper's equations. With
theta* the pre-trained weights (the trial's starting point, fresh head included) and g a
demographic group of ``data.sensitive_attribute``:

    F^g_i = mean_{(x,y) in g} ( d log p(y|x; theta*) / d theta_i )^2     per-sample grads, true labels
    F^g_n = F^g / ||F^g||_1
    I     = mean_g F^g_n,      D = max_g F^g_n - min_g F^g_n
    I'    = I * exp(-gamma * D / mean(D))

and I' is used (a) in an EWC penalty ``lambda/2 * sum_i I'_i (theta_i - theta*_i)^2``, (b) to
initialise Fisher-weighted SVD factors A (m x r), B (r x n) of chosen linear layers, and (c) D,
aggregated per mask parameter group, seeds the mask search with masks that freeze the most
group-specific groups.

How it runs in a search (``fairtune_ray.search.run``):

1. ``compute_fisher`` draws ``fisher.samples_per_group`` training samples per group on the driver
   (only those images travel), and runs ``fisher.compute.per_group_fisher`` as ONE Ray task
   (``num_gpus=1`` when the cluster has a GPU). The model is built exactly as a trial builds it
   (``create_backbone`` after ``set_seed(train.seed)``), so theta* - the fresh head included -
   is the weights a trial with that seed starts from.
2. The result is cached under ``data.cache_dir/fisher/<key>``; ``key`` is a sha256 of the
   checkpoint file's bytes (or the backbone name and config), the dataset manifest (sample ids,
   splits, labels, sensitive attribute), the drawn images, the sample count, the attribute and
   the seed. The folder holds ``fisher_stats.parquet`` (one row per group and parameter tensor),
   ``importance.pt`` (``{"D": ..., "importance": {gamma: I'}}``), ``group_fisher.pt`` (the raw
   per-group Fisher, for a gamma that was not precomputed), ``disparity.png`` and ``meta.json``.
   It is written to a temporary folder and renamed, so a half-written cache is never read.
3. ``compute_and_log_prior`` logs the Parquet and plot to the parent MLflow run with a few
   summary metrics, sets ``cfg.fisher.importance_path`` (the absolute path of ``importance.pt``)
   so that every trial and retrain receives it through the config, and returns the prior masks.
4. ``training.setup.build_model`` reads I' for the trial's gamma with ``load_importance``.

Caveat: unlike the backbone checkpoint (shipped through the object store, see
``models/shipping.py``), ``importance_path`` is a path on the driver's file system; on a
multi-node cluster with the Fisher method, ``data.cache_dir`` must be shared storage.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from fairtune_ray.models.shipping import CheckpointLike, checkpoint_sha256

__all__ = [
    "FisherResult",
    "FisherUnavailableError",
    "FISHER_VERSION",
    "compute_fisher",
    "compute_and_log_prior",
    "fisher_cache_key",
    "fisher_cache_dir",
    "fisher_seed_points",
    "layer_summary",
    "load_fisher",
    "load_importance",
]

#: Bump when the computation changes in a way that invalidates cached results.
FISHER_VERSION = 1

STATS_FILE = "fisher_stats.parquet"
IMPORTANCE_FILE = "importance.pt"
GROUP_FISHER_FILE = "group_fisher.pt"
PLOT_FILE = "disparity.png"
META_FILE = "meta.json"


class FisherUnavailableError(RuntimeError):
    """A configuration uses the Fisher method but no Fisher importance is available."""


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


# --------------------------------------------------------------------------- sampling and keys
def _train_subset(cfg, data):
    """(PackedDataset of the drawn training samples, global row indices), per group.

    Only the manifest is scanned; images are gathered for the drawn rows alone, so a large
    dataset is never copied.
    """
    from fairtune_ray.data.manifest import DataError, PackedDataset
    from fairtune_ray.fisher.compute import select_group_samples

    attribute = cfg.data.sensitive_attribute
    manifest = data.manifest
    train_rows = np.flatnonzero((manifest["split"] == "train").to_numpy())
    if train_rows.size == 0:
        raise DataError("Fisher: the dataset has no 'train' rows")
    groups = torch.as_tensor(manifest[attribute].to_numpy()[train_rows].astype(np.int64))
    picks = select_group_samples(groups, cfg.fisher.samples_per_group, seed=cfg.train.seed)
    rows = np.concatenate([train_rows[idx.numpy()] for _, idx in sorted(picks.items())])
    subset = PackedDataset(manifest.iloc[rows].reset_index(drop=True), data.images[rows], data.info)
    return subset, rows


def fisher_cache_key(cfg, data, checkpoint: CheckpointLike, subset=None) -> str:
    """sha256 (first 16 hex digits) of what decides the Fisher values."""
    attribute = cfg.data.sensitive_attribute
    if subset is None:
        subset, _ = _train_subset(cfg, data)
    h = hashlib.sha256()
    if checkpoint:
        weights = {"checkpoint_sha256": checkpoint_sha256(checkpoint)}
    else:
        weights = {"backbone": cfg.backbone.name, "pretrained": cfg.backbone.pretrained}
    backbone = cfg.backbone.model_dump(exclude={"checkpoint", "pretrain_epochs"})
    header = {"v": FISHER_VERSION, "weights": weights, "backbone": backbone, "attribute": attribute,
              "samples_per_group": cfg.fisher.samples_per_group, "seed": cfg.train.seed}
    h.update(json.dumps(header, sort_keys=True, default=str).encode())
    cols = [c for c in ("sample_id", "split", "label", attribute) if c in data.manifest.columns]
    h.update(data.manifest[cols].to_csv(index=False).encode())
    h.update(np.ascontiguousarray(subset.images).tobytes())
    return h.hexdigest()[:16]


def fisher_cache_dir(cfg, key: str) -> Path:
    return Path(cfg.data.cache_dir).expanduser().resolve() / "fisher" / key


# --------------------------------------------------------------------------- the computation
def _fisher_task(cfg_dict: dict, images: Tensor, labels: Tensor, groups: Tensor,
                 checkpoint: CheckpointLike) -> dict:
    """Per-group Fisher at theta*; runs as a Ray task or in-process. Returns CPU tensors."""
    from accelerate.utils import set_seed

    from fairtune_ray.config import ExperimentConfig
    from fairtune_ray.data.loading import BatchTransform
    from fairtune_ray.fisher.compute import per_group_fisher
    from fairtune_ray.models import backbone_data_config, create_backbone

    t0 = time.perf_counter()
    cfg = ExperimentConfig.model_validate(cfg_dict)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    set_seed(cfg.train.seed)  # the same head init as a trial with seed train.seed
    model = create_backbone(cfg.backbone, num_classes=1, checkpoint=checkpoint).to(device)
    x = BatchTransform(backbone_data_config(model), augment=False)(images, train=False)
    fisher = per_group_fisher(model, x, labels, groups, samples_per_group=cfg.fisher.samples_per_group,
                              chunk_size=cfg.fisher.chunk_size, seed=cfg.train.seed, device=device)
    return {"fisher": fisher, "seconds": time.perf_counter() - t0, "device": str(device),
            "torch_threads": torch.get_num_threads()}


def _run_task(cfg, subset, checkpoint: CheckpointLike, use_ray: bool) -> dict:
    from fairtune_ray.data.loading import split_tensors

    split = split_tensors(subset, "train", cfg.data.sensitive_attribute)
    args = (cfg.model_dump(), split.images, split.labels, split.groups, checkpoint)
    if not use_ray:
        return {**_fisher_task(*args), "where": "in-process"}
    import ray

    gpus = 1 if float(ray.cluster_resources().get("GPU", 0)) >= 1 else 0
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=1)(_fisher_task)
    return {**ray.get(remote.remote(*args)), "where": "ray-task"}


def _save(directory: Path, result: dict, stats: pd.DataFrame, meta: dict) -> None:
    """Write the cache folder atomically (temporary folder + rename)."""
    from fairtune_ray.fisher.stats import plot_disparity, save_fisher_parquet

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared like the others
    try:
        save_fisher_parquet(stats, tmp / STATS_FILE)
        torch.save({"D": result["D"], "importance": {_gamma_key(g): v for g, v in result["importance"].items()},
                    "gammas": [float(g) for g in result["importance"]]}, tmp / IMPORTANCE_FILE)
        torch.save({"groups": {str(g): f for g, f in result["fisher"].items()}}, tmp / GROUP_FISHER_FILE)
        plot_disparity(stats, tmp / PLOT_FILE, title=f"Fisher disparity per layer ({meta.get('attribute', '')})")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        try:
            os.rename(tmp, directory)
        except OSError:  # written concurrently by another process: keep theirs
            if not (directory / META_FILE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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


def compute_fisher(cfg, data, checkpoint: CheckpointLike, *, use_ray: Optional[bool] = None,
                   log: Callable[[str], None] = print) -> FisherResult:
    """Per-group Fisher at the pre-trained weights, its neutralised importance and statistics.

    Cached on disk (see the module docstring); a second call with the same weights, data and
    settings reads the cache. ``use_ray`` (default: whether Ray is initialised) runs the
    computation as one Ray task, on a GPU when the cluster has one.
    """
    from fairtune_ray.fisher.neutralise import neutralised_importance
    from fairtune_ray.fisher.stats import fisher_statistics

    subset, _ = _train_subset(cfg, data)
    key = fisher_cache_key(cfg, data, checkpoint, subset)
    directory = fisher_cache_dir(cfg, key)
    if (directory / META_FILE).is_file():
        result = load_fisher(directory)
        for g in cfg.fisher.gamma:  # a gamma added to the config since: derived, not stored
            if not any(math.isclose(float(g), k) for k in result.importance):
                result.importance[float(g)] = neutralised_importance(result.fisher_by_group, gamma=float(g))[0]
        log(f"Fisher: cached {directory}")
        return result
    if use_ray is None:
        import ray

        use_ray = ray.is_initialized()
    attribute = cfg.data.sensitive_attribute
    counts = subset.manifest[attribute].value_counts().sort_index()
    log(f"Fisher: {len(subset.manifest)} training samples ({', '.join(f'{g}: {n}' for g, n in counts.items())}) "
        f"by {attribute}, {'as a Ray task' if use_ray else 'in-process'}")
    out = _run_task(cfg, subset, checkpoint, use_ray)
    fisher = out["fisher"]
    gammas = list(dict.fromkeys(float(g) for g in [0.0, *cfg.fisher.gamma]))
    importance: dict[float, dict[str, Tensor]] = {}
    D: dict[str, Tensor] = {}
    for g in gammas:
        importance[g], D = neutralised_importance(fisher, gamma=g)
    group_names = data.info.attributes.get(attribute, {})
    stats = fisher_statistics(fisher, group_names, gamma=0.0)
    for g in gammas:
        if g != 0.0:
            per_param = {n: float(t.double().mean()) for n, t in importance[g].items()}
            stats[f"importance_mean_gamma_{g:g}"] = stats["param"].map(per_param)
    meta = {"key": key, "version": FISHER_VERSION, "attribute": attribute, "checkpoint": str(checkpoint) if checkpoint else None,
            "backbone": cfg.backbone.name, "samples_per_group": cfg.fisher.samples_per_group,
            "samples": {str(group_names.get(int(g), g)): int(n) for g, n in counts.items()},
            "gammas": gammas, "seed": cfg.train.seed, "seconds": out["seconds"], "device": out["device"],
            "where": out["where"], "n_params": sum(t.numel() for t in D.values()), "created": time.time()}
    _save(directory, {"fisher": fisher, "importance": importance, "D": D}, stats, meta)
    log(f"Fisher: computed in {out['seconds']:.1f}s on {out['device']} ({out['where']}) -> {directory}")
    return FisherResult(key, directory, fisher, importance, D, stats, meta, cached=False)


# --------------------------------------------------------------------------- trials
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
    from fairtune_ray.fisher.neutralise import neutralised_importance

    group_file = p.parent / GROUP_FISHER_FILE
    if not group_file.is_file():
        raise FisherUnavailableError(f"gamma={gamma} was not precomputed in {p} and {group_file} is missing")
    groups = {int(g): f for g, f in _load_pt(group_file)["groups"].items()}
    return neutralised_importance(groups, gamma=float(gamma))[0]


# --------------------------------------------------------------------------- search
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


def fisher_seed_points(cfg, n_bits: int, points: list[dict]) -> list[dict]:
    """``points`` with one Fisher-only configuration inserted after the baseline points.

    With ``method: both`` the results table's "Fisher" row is the best trial that trains every
    mask group (all bits 1) with a Fisher option on; this guarantees such a trial exists: all
    ones, EWC on at ``fisher.ewc_lambda_max``, the largest gamma, the configured layers
    factorised at the first rank. It goes third (after all-ones and all-zeros) so that even a
    small ``search.num_samples`` evaluates it.
    """
    from fairtune_ray.search.space import bit_keys, factorise_choices, uses_fisher, uses_mask_bits

    if not uses_fisher(cfg) or not points:
        return list(points)
    lr = points[0]["lr"]
    point: dict = {"lr": lr}
    if uses_mask_bits(cfg):
        point.update({k: 1 for k in bit_keys(n_bits)})
    point.update({"ewc_on": 1, "ewc_lambda": max(cfg.fisher.ewc_lambda_max, 1e-5),
                  "gamma": max(cfg.fisher.gamma), "rank": cfg.fisher.ranks[0],
                  "factorise": factorise_choices(cfg)[-1]})
    if point in points:
        return list(points)
    at = 2 if uses_mask_bits(cfg) else len(points)
    return list(points[:at]) + [point] + list(points[at:])


def compute_and_log_prior(cfg, data, checkpoint, space, client, parent, log) -> list[str]:
    """Ensure the Fisher (cached), log it to the parent run, expose I' to the trials, return the
    prior masks (bit strings; none for ``method: fisher``, which searches no mask bits).

    Side effect: sets ``cfg.fisher.importance_path`` to the cached ``importance.pt`` so that the
    config handed to trials and retrains carries it.
    """
    from fairtune_ray.fisher.prior import prior_masks, rank_groups_by_disparity
    from fairtune_ray.search.space import uses_mask_bits
    from fairtune_ray.tracking.mlflow_runs import log_metrics

    result = compute_fisher(cfg, data, checkpoint, log=log)
    cfg.fisher.importance_path = str(result.importance_path)
    client.log_artifact(parent, str(result.parquet_path), "fisher")
    if result.plot_path.is_file():
        client.log_artifact(parent, str(result.plot_path), "fisher")
    summary = layer_summary(result.stats)
    metrics = {"fisher/mean_disparity": result.mean_disparity,
               "fisher/max_layer_disparity": float(summary["mean_disparity"].max()) if len(summary) else 0.0,
               "fisher/n_params": float(sum(t.numel() for t in result.D.values())),
               "fisher/samples": float(sum(result.meta.get("samples", {}).values())),
               "fisher/seconds": float(result.meta.get("seconds", 0.0)),
               "fisher/cached": float(result.cached)}
    log_metrics(client, parent, metrics, step=0)
    client.set_tag(parent, "fairtune.fisher_key", result.key)
    client.set_tag(parent, "fairtune.fisher_importance", str(result.importance_path))
    if len(summary):
        client.set_tag(parent, "fairtune.fisher_top_layer", str(summary["layer"].iloc[0]))
    if not uses_mask_bits(cfg):
        return []
    masks = prior_masks(space, result.D, cfg.fisher.prior_k)
    ranked = rank_groups_by_disparity(space, result.D)
    top = ", ".join(f"{name} ({score:.2e})" for _, name, score in ranked[:3])
    log(f"Fisher prior: most group-specific mask groups {top}; seed masks {masks}")
    client.set_tag(parent, "fairtune.fisher_prior_masks", ",".join(masks))
    return masks
