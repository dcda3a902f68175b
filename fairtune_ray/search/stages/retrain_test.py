"""Stage 6, retrain-and-test: retrain every candidate from the pre-trained weights, test once.

Each candidate (the selected configuration and the baselines) is retrained with several seeds
as parallel Ray tasks through the same inner loop, evaluated on the test split at its best
validation epoch, and summarised with stratified-bootstrap 95% intervals of the seed-averaged
metric (the same resampled test indices for every seed). Every other row is compared with the
selected one on the same resamples (a paired difference with its interval and verdict). Writes
results.csv/json and test_scores.npz to the run folder, and the exported models (``search.export``:
the first seed's weights and model.json, search/exports.py); only those retrains send their weights back.
Each row also carries its training-split worst-group and overall AUC at the tested epoch (seed mean), so
the fairness generalisation gap (train vs test) is visible.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import ray

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.export.capture import ModelKeepingAccelerator, capture
from fairtune_ray.metrics import bootstrap_intervals, paired_differences
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.search.exports import exported_methods, write_exports
from fairtune_ray.search.results import (
    PAIRED_METRICS,
    TABLE_METRICS,
    TRAIN_METRICS,
    MetricInterval,
    ResultRow,
    TestScores,
    selected_row,
    write_results,
)
from fairtune_ray.search.run_folder import SCORES_FILE, save_test_scores
from fairtune_ray.search.stages.types import Candidate, Prepared, Selection, Tested
from fairtune_ray.training.loop import fine_tune
from fairtune_ray.training.process import prepare_trial_process
from fairtune_ray.training.regime import single_process_regime
from fairtune_ray.training.spec import TrialSpec


def retrain_and_test(p: Prepared, selection: Selection, log: Callable = print) -> Tested:
    trained: dict[str, dict] = {}
    rows = retrain_candidates(p.cfg, selection.candidates, p.data, p.checkpoint, p.group_names, log, exported=trained)
    compare_with_selected(p.cfg, rows, p.group_names, p.data.info.positive_is_disease)
    write_results(rows, p.run_dir)
    save_test_scores(rows, p.run_dir / SCORES_FILE, p.group_names)  # for the report's ROC curves
    write_exports(p, selection.candidates, rows, trained)
    return Tested(rows)


def retrain_candidates(cfg: ExperimentConfig, candidates: list[Candidate], data: PackedDataset,
                       checkpoint: CheckpointLike, group_names: dict[int, str], log: Callable = print,
                       exported: Optional[dict[str, dict]] = None) -> list[ResultRow]:
    """Every candidate x ``search.retrain_seeds`` seeds as parallel Ray tasks; one row per candidate.

    With ``exported`` (a dict to fill), the first-seed retrain of each candidate ``search.export``
    names also returns its weights, and its output lands there under the candidate's method."""
    seeds = [cfg.train.seed + i for i in range(cfg.search.retrain_seeds)]
    export = exported_methods(cfg, candidates) if exported is not None else set()
    remote = ray.remote(num_cpus=cfg.trial.resources.cpu, num_gpus=cfg.trial.resources.gpu, max_retries=1)(_retrain)
    data_ref, cfg_dict = ray.put(data), cfg.model_dump()
    futures = {(c.method, s): remote.remote(cfg_dict, TrialSpec(**{**c.spec.to_dict(), "seed": s}), data_ref, checkpoint,
                                            c.method in export and s == seeds[0])
               for c in candidates for s in seeds}
    log(f"retraining {len(candidates)} configurations x {len(seeds)} seeds ({len(futures)} Ray tasks)")
    outputs = dict(zip(futures, ray.get(list(futures.values()))))
    if exported is not None:
        exported.update({m: outputs[(m, seeds[0])] for m in export})
    return [result_row(cfg, c, [outputs[(c.method, s)] for s in seeds], group_names,
                       positive_is_disease=data.info.positive_is_disease) for c in candidates]


def _retrain(cfg_dict: dict, spec: TrialSpec, data: PackedDataset, checkpoint: CheckpointLike,
             export: bool = False) -> dict:
    """One seed of one candidate, in a Ray task: train on train, pick the epoch on val, score test;
    with ``export`` also the trained weights (only then: a state dict is the one big thing here)."""
    cfg = single_process_regime(ExperimentConfig.model_validate(cfg_dict))  # a multi-worker trial's global batch
    prepare_trial_process(cfg)  # retrains share CPUs and GPUs like trials
    accelerator = ModelKeepingAccelerator.for_config(cfg) if export else None
    fit = fine_tune(cfg, spec, data, checkpoint, final_splits=("test", "train"), accelerator=accelerator)
    test = fit.scores["test"]
    out = {"labels": test.labels, "scores": test.scores, "groups": test.groups, "trainable": fit.trainable_params,
           "best_epoch": fit.best_epoch, "val_objective": fit.best_val.get("objective", float("nan")),
           "seconds": fit.seconds, "effective_batch_size": fit.effective_batch_size,
           "steps_per_epoch": fit.steps_per_epoch, "test_metrics": fit.final["test"],
           "train_metrics": {m: fit.final["train"].get(m, float("nan")) for m in TRAIN_METRICS}}
    if accelerator is not None:
        out["export"] = capture(accelerator.trained_model())
    return out


def compare_with_selected(cfg: ExperimentConfig, rows: list[ResultRow], group_names: dict[int, str],
                          positive_is_disease: bool = True) -> None:
    """Fill each other row's ``vs_selected``: selected - row on the same bootstrap resamples (paired)."""
    selected = selected_row(rows)
    if selected is None or selected.scores is None:
        return
    for row in rows:
        if row is selected or row.scores is None:
            continue
        if not (np.array_equal(row.scores.labels, selected.scores.labels)
                and np.array_equal(row.scores.groups, selected.scores.groups)):
            raise RuntimeError(f"'{row.method}' was tested on other images than the selected configuration: "
                               "a paired comparison needs the same test split in the same order")
        row.vs_selected = paired_differences(selected.scores.labels, selected.scores.scores, row.scores.scores,
                                             selected.scores.groups, list(PAIRED_METRICS), n_boot=cfg.search.bootstrap,
                                             seed=cfg.search.seed, group_names=group_names,
                                             positive_is_disease=positive_is_disease)


def result_row(cfg: ExperimentConfig, c: Candidate, runs: list[dict], group_names: dict[int, str],
               positive_is_disease: bool = True) -> ResultRow:
    """The candidate's row: seed-averaged test metrics with bootstrap intervals and the per-seed spread.
    ``positive_is_disease`` is the dataset's (dataset.json ``disease_label == 1``), as in the loop's metrics."""
    labels, groups = runs[0]["labels"], runs[0]["groups"]
    scores = [r["scores"] for r in runs]
    intervals = bootstrap_intervals(labels, scores, groups, list(TABLE_METRICS), n_boot=cfg.search.bootstrap,
                                    seed=cfg.search.seed, group_names=group_names,
                                    positive_is_disease=positive_is_disease)
    test = {m: MetricInterval(intervals[m]["point"], intervals[m]["lo"], intervals[m]["hi"],
                              float(np.nanstd([r["test_metrics"][m] for r in runs])))
            for m in TABLE_METRICS}
    return ResultRow(method=c.method, role=c.role, mask=c.spec.mask, lr=c.spec.lr, trainable_params=runs[0]["trainable"],
                     seeds=len(runs), val_objective=float(np.mean([r["val_objective"] for r in runs])),
                     ewc_lambda=c.spec.ewc_lambda, rank=c.spec.rank, factorise="+".join(c.spec.factorise),
                     peft=adapters.label if (adapters := c.spec.adapters()) else "", test=test,
                     train={m: float(np.nanmean([r["train_metrics"][m] for r in runs])) for m in TRAIN_METRICS},
                     scores=TestScores(labels, groups, scores))
