"""Stage 2, tune: the Ray Tune study (HyperOpt TPE + ASHA), each trial's status in MLflow, and one
record per trial for selection (``trials.json`` in the run folder).

An interrupted study (Ctrl-C) keeps its Tune state; ``--resume`` continues it with ``Tuner.restore``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from mlflow.tracking import MlflowClient
from ray import tune

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.metrics import parse_objective
from fairtune_ray.search.callbacks import TrialStatusCallback
from fairtune_ray.search.errors import SearchInterrupted
from fairtune_ray.search.fisher_prior import fisher_seed_points
from fairtune_ray.search.run_folder import TRIALS_FILE, write_json
from fairtune_ray.search.shared_data import SharedDataset
from fairtune_ray.search.space import baseline_points, build_param_space, initial_points, uses_fisher
from fairtune_ray.search.stages.types import Prepared, TuneOutcome
from fairtune_ray.search.trial import run_trial
from fairtune_ray.search.tune_value import TUNE_METRIC, epoch_value_key
from fairtune_ray.search.tuner import build_tuner, make_scheduler, trial_resources
from fairtune_ray.search.warm_start import searcher_warm_args
from fairtune_ray.tracking import finish_child_runs

Statuses = dict[str, tuple[str, str]]


def run_tune(p: Prepared, log: Callable = print) -> TuneOutcome:
    cfg = p.cfg
    trainable = tune.with_parameters(run_trial, cfg_dict=cfg.model_dump(), data=SharedDataset(p.data), checkpoint=p.checkpoint,
                                     space_name=p.space_name, n_bits=p.n_bits,
                                     tracking={"uri": p.tracking_uri, "parent_run_id": p.parent_run_id,
                                               "method": cfg.search.method})
    status_cb = TrialStatusCallback(cfg.train.epochs)
    if p.resume and tune.Tuner.can_restore(p.exp_path):
        log(f"resuming search from {p.exp_path}")
        tuner = tune.Tuner.restore(p.exp_path, trainable=tune.with_resources(trainable, trial_resources(cfg)),
                                   resume_unfinished=True, resume_errored=True)
    else:
        tuner = build_tuner(cfg, trainable, build_param_space(cfg, p.n_bits), _first_points(p), p.storage, p.name,
                            [status_cb], scheduler=make_scheduler(cfg, baseline_points(cfg, p.n_bits)),
                            **searcher_warm_args(cfg, p.run_dir))
    result_grid = tuner.fit()
    statuses = reconcile_statuses(result_grid, status_cb.statuses, cfg.train.epochs)
    finish_child_runs(p.tracking_uri, p.parent_run_id, statuses)
    _fail_if_incomplete(p, result_grid, log)
    trials = trial_records(result_grid, cfg, statuses)
    if not trials:
        MlflowClient(p.tracking_uri).set_terminated(p.parent_run_id, "FAILED")
        raise RuntimeError(f"no trial reported a result; see the Ray logs under {p.exp_path}")
    write_json(Path(p.run_dir) / TRIALS_FILE, trials)
    # on the parent run now, not only when published: a later study can warm-start from it (search.warm_start)
    MlflowClient(p.tracking_uri).log_artifact(p.parent_run_id, str(Path(p.run_dir) / TRIALS_FILE))
    return TuneOutcome(trials, statuses)


def _first_points(p: Prepared) -> list[dict]:
    """Baselines and prior masks first; with Fisher, a Fisher-only point for the "Fisher" row."""
    points = initial_points(p.cfg, p.n_bits, p.prior_masks)
    return fisher_seed_points(p.cfg, p.n_bits, points) if uses_fisher(p.cfg) else points


def reconcile_statuses(result_grid, seen: Statuses, max_epochs: int) -> Statuses:
    """The callback's statuses plus those of trials it did not see (finished before a resume)."""
    statuses = dict(seen)
    for res in result_grid:
        tid = res.metrics.get("trial_id") if res.metrics else None
        if not tid or tid in statuses:
            continue
        if res.error is not None:
            statuses[tid] = ("failed", str(res.error)[:3000])
        elif int(res.metrics.get("epoch", 0)) >= max_epochs:
            statuses[tid] = ("completed", "")
        else:
            statuses[tid] = ("stopped_early", f"stopped by ASHA after epoch {res.metrics.get('epoch')}")
    return statuses


def _fail_if_incomplete(p: Prepared, result_grid, log: Callable) -> None:
    """``Tuner.fit`` returns normally after SIGINT, with its state saved: say how to resume."""
    finished = result_grid.num_terminated + result_grid.num_errors
    if finished >= p.cfg.search.num_samples:
        return
    MlflowClient(p.tracking_uri).set_terminated(p.parent_run_id, "KILLED")
    msg = (f"search '{p.name}' interrupted after {finished} of {p.cfg.search.num_samples} trials; continue it with: "
           f"fairtune-ray search <config> --resume --name {p.name} --storage {p.storage}")
    log(msg)
    raise SearchInterrupted(msg)


def trial_records(result_grid, cfg: ExperimentConfig, statuses: Statuses) -> list[dict]:
    """One record per trial: its configuration, the validation metrics of its best epoch and the value
    Tune last saw (``search_value``: the objective, penalised when a constraint is broken)."""
    objective, key = parse_objective(cfg.train.objective), epoch_value_key(cfg)
    records = []
    for res in result_grid:
        df = res.metrics_dataframe
        if df is None or df.empty or key not in df:
            continue
        values = df[key].astype(float)  # the epoch the trial's best-so-far report came from
        idx = (values.idxmax() if objective.mode == "max" else values.idxmin()) if values.notna().any() else df.index[-1]
        best = df.loc[idx].to_dict()
        metrics = {k[len("val/"):]: v for k, v in best.items() if isinstance(k, str) and k.startswith("val/")}
        trial_id = res.metrics.get("trial_id") or Path(res.path).name
        records.append({"trial_id": trial_id, "config": dict(res.config), "metrics": metrics,
                        "objective": float(best[key]), "search_value": float(best.get(TUNE_METRIC, math.nan)),
                        "best_epoch": int(best["epoch"]), "epochs": int(df["epoch"].max()),
                        "trainable_params": int(best.get("trainable_params", 0)),
                        "status": statuses.get(trial_id, ("unknown", ""))[0]})
    return records
