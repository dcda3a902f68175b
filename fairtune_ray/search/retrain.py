"""After the search: retrain chosen configurations from the pre-trained weights, test once.

Each candidate (the selected configuration and the baselines) is retrained with several seeds
as parallel Ray tasks through the same inner loop, evaluated on the test split at its best
validation epoch, and summarised with stratified-bootstrap 95% intervals of the seed-averaged
metric (the same resampled test indices for every seed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.manifest import PackedDataset
from fairtune_ray.metrics import bootstrap_intervals
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.training.spec import TrialSpec

TABLE_METRICS = ("overall_auc", "min_auc", "auc_gap", "eodds_diff")


@dataclass
class Candidate:
    method: str
    spec: TrialSpec


def _retrain(cfg_dict: dict, spec: TrialSpec, data: PackedDataset, checkpoint: CheckpointLike) -> dict:
    from fairtune_ray.config import ExperimentConfig
    from fairtune_ray.search.trial import prepare_trial_process
    from fairtune_ray.training.loop import fine_tune

    cfg = ExperimentConfig.model_validate(cfg_dict)
    prepare_trial_process(cfg)  # retrains share CPUs and GPUs like trials
    fit = fine_tune(cfg, spec, data, checkpoint, final_splits=("test",))
    test = fit.scores["test"]
    return {"labels": test.labels, "scores": test.scores, "groups": test.groups, "trainable": fit.trainable_params,
            "best_epoch": fit.best_epoch, "val_objective": fit.best_val.get("objective", float("nan")),
            "seconds": fit.seconds, "test_metrics": fit.final["test"]}


def retrain_and_test(cfg: ExperimentConfig, candidates: list[Candidate], data_ref, checkpoint: CheckpointLike,
                     group_names: dict[int, str], log=print) -> list[dict]:
    """Run every candidate x seed as a Ray task; return one results-table row per candidate."""
    remote = ray.remote(num_cpus=cfg.trial.resources.cpu, num_gpus=cfg.trial.resources.gpu, max_retries=1)(_retrain)
    cfg_dict = cfg.model_dump()
    seeds = [cfg.train.seed + i for i in range(cfg.search.retrain_seeds)]
    futures = {(c.method, s): remote.remote(cfg_dict, TrialSpec(**{**c.spec.to_dict(), "seed": s}), data_ref, checkpoint)
               for c in candidates for s in seeds}
    log(f"retraining {len(candidates)} configurations x {len(seeds)} seeds ({len(futures)} Ray tasks)")
    outputs = dict(zip(futures, ray.get(list(futures.values()))))
    rows = []
    for c in candidates:
        runs = [outputs[(c.method, s)] for s in seeds]
        labels, groups = runs[0]["labels"], runs[0]["groups"]
        intervals = bootstrap_intervals(labels, [r["scores"] for r in runs], groups, list(TABLE_METRICS),
                                        n_boot=cfg.search.bootstrap, seed=cfg.search.seed, group_names=group_names)
        row = {"method": c.method, "mask": c.spec.mask, "lr": c.spec.lr, "ewc_lambda": c.spec.ewc_lambda,
               "rank": c.spec.rank, "factorise": "+".join(c.spec.factorise), "trainable_params": runs[0]["trainable"],
               "seeds": len(seeds), "val_objective": float(np.mean([r["val_objective"] for r in runs]))}
        for m in TABLE_METRICS:
            iv = intervals[m]
            per_seed = [r["test_metrics"][m] for r in runs]
            row.update({f"test/{m}": iv["point"], f"test/{m}_lo": iv["lo"], f"test/{m}_hi": iv["hi"],
                        f"test/{m}_seed_std": float(np.nanstd(per_seed))})
        row["_scores"] = {"labels": labels, "groups": groups, "scores": [r["scores"] for r in runs]}
        rows.append(row)
    return rows
