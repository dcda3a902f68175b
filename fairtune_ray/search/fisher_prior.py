"""The Fisher method inside a search: log the cached Fisher to the parent run, hand I' to the
trials, and seed Tune with the prior masks and one Fisher-only point.

The computation and its cache are the fisher layer's (``fairtune_ray.fisher.cache``); this module
adds what only a search has: the MLflow parent run and the Tune search space.
"""
from __future__ import annotations

from typing import Callable

from mlflow.tracking import MlflowClient

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.fisher.cache import FisherResult, compute_fisher, layer_summary
from fairtune_ray.fisher.neutralise import neutralised_importance
from fairtune_ray.fisher.prior import SpaceLike, prior_masks, rank_groups_by_disparity
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.search.space import bit_keys, factorise_choices, searches_rank, uses_fisher, uses_mask_bits
from fairtune_ray.tracking.mlflow_runs import log_metrics

__all__ = ["compute_and_log_prior", "fisher_seed_points", "importance_at_zero"]


def fisher_seed_points(cfg: ExperimentConfig, n_bits: int, points: list[dict]) -> list[dict]:
    """``points`` with one Fisher-only configuration inserted after the baseline points.

    With ``method: both`` the results table's "Fisher" row is the best trial that trains every
    mask group (all bits 1) with a Fisher option on; this guarantees such a trial exists: all
    ones, EWC on at ``fisher.ewc_lambda_max``, the largest gamma, and the configured layers (if
    any) factorised at the first rank. It goes third (after all-ones and all-zeros) so that even a
    small ``search.num_samples`` evaluates it.
    """
    if not uses_fisher(cfg) or not points:
        return list(points)
    lr = points[0]["lr"]
    point: dict = {"lr": lr}
    if uses_mask_bits(cfg):
        point.update({k: 1 for k in bit_keys(n_bits)})
    point.update({"ewc_on": 1, "ewc_lambda": max(cfg.fisher.ewc_lambda_max, 1e-5), "gamma": max(cfg.fisher.gamma)})
    if searches_rank(cfg):
        point.update({"rank": cfg.fisher.ranks[0], "factorise": factorise_choices(cfg)[-1]})
    if point in points:
        return list(points)
    at = 2 if uses_mask_bits(cfg) else len(points)
    return list(points[:at]) + [point] + list(points[at:])


def importance_at_zero(result: FisherResult) -> dict:
    """I (gamma = 0), the denominator of the prior's relative disparity: the cached one if that
    gamma was computed, else from the per-group Fisher (I' at another gamma would make the
    ranking depend on gamma)."""
    for gamma, importance in result.importance.items():
        if float(gamma) == 0.0:
            return importance
    return neutralised_importance(result.fisher_by_group, gamma=0.0)[0]


def _log_to_parent(result: FisherResult, client: MlflowClient, parent: str) -> None:
    """The statistics table and plot as artifacts, a few summary metrics, and the cache's key and path as tags."""
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


def compute_and_log_prior(cfg: ExperimentConfig, data: PackedDataset, checkpoint: CheckpointLike, space: SpaceLike,
                          client: MlflowClient, parent: str, log: Callable[[str], None]) -> list[str]:
    """Ensure the Fisher (cached), log it to the parent run, expose I' to the trials, return the
    prior masks (bit strings; none for ``method: fisher``, which searches no mask bits).

    Side effect: sets ``cfg.fisher.importance_path`` to the cached ``importance.pt`` so that the
    config handed to trials and retrains carries it.
    """
    result = compute_fisher(cfg, data, checkpoint, log=log)
    cfg.fisher.importance_path = str(result.importance_path)
    _log_to_parent(result, client, parent)
    if not uses_mask_bits(cfg):
        return []
    I = importance_at_zero(result)
    masks = prior_masks(space, result.D, cfg.fisher.prior_k, I=I)
    ranked = rank_groups_by_disparity(space, result.D, I)
    top = ", ".join(f"{name} ({score:.3g})" for _, name, score in ranked[:3])
    log(f"Fisher prior: most group-specific mask groups (relative disparity sum D / sum I) {top}; "
        f"seed masks {masks}")
    client.set_tag(parent, "fairtune.fisher_prior_masks", ",".join(masks))
    return masks
