"""Stage 3, confirm: the best trials on validation, trained again with several seeds.

The single best of many noisy trials on a small validation split is partly the luckiest one (the
winner's curse). The top ``search.confirm.top_k`` trials are retrained from the pre-trained weights
with ``search.confirm.seeds`` seeds, as parallel Ray tasks that are given train and validation only,
and selection ranks them by the seed mean (or its lower bound, mean - one standard error). The test
split stays untouched until the final test. With ``search.constraint`` the top k are taken among the
feasible trials first (then the least violating), so confirmation is not spent on trials selection
would rank last.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Optional

import numpy as np
from mlflow.tracking import MlflowClient

from fairtune_ray.common.tables import format_table
from fairtune_ray.config.constraint import Constraint
from fairtune_ray.metrics import parse_objective
from fairtune_ray.metrics.objectives import Objective
from fairtune_ray.search.constraint import resolve_or_fail, trial_violations
from fairtune_ray.search.selection import constrained_order
from fairtune_ray.search.space import spec_from_trial_config
from fairtune_ray.search.stages.types import Confirmation, Prepared, TuneOutcome
from fairtune_ray.search.validation_fits import run_validation_fits

CONFIRM_COLUMNS = [("trial_id", "trial"), ("search_objective", "search value"), ("mean", "seed mean"),
                   ("sd", "seed sd"), ("lcb", "mean - 1 se"), ("n", "seeds")]


def confirm(p: Prepared, tuned: TuneOutcome, log: Callable = print) -> Confirmation:
    cfg, settings = p.cfg, p.cfg.search.confirm
    objective = parse_objective(cfg.train.objective)
    constraint = resolve_or_fail(cfg, tuned.trials, p.n_bits, p.tracking_uri, p.parent_run_id, log)
    top = top_trials(tuned.trials, objective, settings.top_k, constraint)
    if not top:
        return Confirmation([], settings.statistic)
    seeds = [cfg.train.seed + i for i in range(settings.seeds)]
    specs = {(t["trial_id"], s): spec_from_trial_config(t["config"], cfg, p.space_name, p.n_bits, seed=s)
             for t in top for s in seeds}
    log(f"confirming the top {len(top)} trials with {len(seeds)} seeds each ({len(specs)} Ray tasks, "
        "train and validation only)")
    fits = run_validation_fits(cfg, specs, p.data, p.checkpoint)
    confirmed = [confirmed_trial(t, [fits[(t["trial_id"], s)] for s in seeds], objective, settings.statistic)
                 for t in top]
    columns = CONFIRM_COLUMNS
    if constraint is not None:  # judged on the seed-mean metrics, as selection judges them
        for c, v in zip(confirmed, trial_violations(constraint, confirmed)):
            c["feasible"] = "yes" if v == 0.0 else f"no ({v:.3g})"
        columns = [*CONFIRM_COLUMNS, ("feasible", f"feasible: {constraint.resolved_text}")]
    table = format_table(confirmed, columns)
    log(f"\nconfirmation on validation ({cfg.train.objective}; selection ranks by the seed {settings.statistic}):\n{table}")
    MlflowClient(p.tracking_uri).log_text(p.parent_run_id, table, "confirmation.md")
    return Confirmation(confirmed, settings.statistic)


def top_trials(trials: list[dict], objective: Objective, k: int, constraint: Optional[Constraint] = None) -> list[dict]:
    """The ``k`` non-failed trials with the best finite search value (ties keep trial order); with a
    (resolved) constraint the feasible ones first, then the least violating."""
    ok = [t for t in trials if t.get("status") != "failed" and math.isfinite(float(t.get("objective", math.nan)))]
    order = constrained_order([float(t["objective"]) for t in ok], objective, trial_violations(constraint, ok))
    return [ok[i] for i in order[:k]]


def confirmed_trial(trial: dict, runs: list[dict], objective: Objective, statistic: str) -> dict:
    """The trial with its seeds' validation results: seed-mean metrics, mean, sd and lower bound of the
    objective, and ``objective`` set to the statistic selection ranks by."""
    values = np.array([r["objective"] for r in runs], dtype=float)
    n = int(np.isfinite(values).sum())
    with warnings.catch_warnings():  # an all-NaN column (a metric undefined for every seed) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = float(np.nanmean(values)) if n else math.nan
        sd = float(np.nanstd(values, ddof=1)) if n > 1 else 0.0
        keys = dict.fromkeys(k for r in runs for k in r["metrics"])
        metrics = {k: float(np.nanmean([r["metrics"].get(k, math.nan) for r in runs])) for k in keys}
    lcb = mean - objective.sign * sd / math.sqrt(max(n, 1))
    return {"trial_id": trial["trial_id"], "config": trial["config"], "status": trial.get("status", ""),
            "search_objective": float(trial["objective"]), "seed_objectives": values.tolist(), "n": n,
            "mean": mean, "sd": sd, "lcb": lcb, "metrics": metrics, "objective": lcb if statistic == "lcb" else mean,
            "splits_given": sorted({s for r in runs for s in r["splits_given"]})}
