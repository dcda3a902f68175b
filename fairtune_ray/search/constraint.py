"""What ``search.constraint`` means for a study: feasible trials, the value TPE sees, the baselines.

A trial is judged at one epoch: the one its record holds (``search/stages/tune.py``), its best epoch
by the objective (or by its lower bound with ``tune_value: lcb``), which is also the epoch a retrain
restores (``train.select_epoch: best``); a confirmed trial by its seeds' mean metrics. It is
*feasible* when every bound holds there; an undefined metric (NaN) breaks its bound.

Relative bounds (``auc_gap <= full``) are fixed at the baseline trial's value at its recorded epoch.
During the search that value may not exist yet (trials run concurrently), so the penalty TPE and
ASHA see uses the absolute bounds only; selection, confirmation and the report use all of them. A
baseline trial that failed or never reported leaves the constraint unresolvable: selection stops
(``ConstraintUnresolved``) rather than guess which trials are feasible.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

from mlflow.tracking import MlflowClient

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.config.constraint import Constraint, parse_constraint, search_baselines
from fairtune_ray.metrics.objectives import Objective
from fairtune_ray.search.space import baseline_points, matches_point

__all__ = ["Constraint", "ConstraintUnresolved", "VIOLATION_KEY", "study_constraint", "resolve_constraint", "resolve_or_fail",
           "trial_violations", "penalised", "feasibility_note"]

#: per-epoch key of the absolute bounds' violation in what a trial reports to Tune
VIOLATION_KEY = "constraint_violation"


class ConstraintUnresolved(RuntimeError):
    """A relative bound names a baseline trial that has no usable value."""


def study_constraint(cfg: ExperimentConfig) -> Optional[Constraint]:
    """``search.constraint`` parsed (the config checked it at load), or None."""
    text = cfg.search.constraint
    if not text:
        return None
    return parse_constraint(text, search_baselines(cfg.search.method, cfg.search.num_samples))


def baseline_trial(cfg: ExperimentConfig, trials: Sequence[dict], n_bits: int, name: str) -> Optional[dict]:
    """The first trial of the baseline point ``name`` (``full``, ``linear``), or None."""
    names = search_baselines(cfg.search.method, cfg.search.num_samples)
    point = baseline_points(cfg, n_bits)[names.index(name)]
    return next((t for t in trials if matches_point(t.get("config", {}), point)), None)


def resolve_constraint(cfg: ExperimentConfig, trials: Sequence[dict], n_bits: int) -> Optional[Constraint]:
    """The study's constraint with every relative bound fixed at its baseline trial's validation value.

    Raises ``ConstraintUnresolved`` when that trial failed, is missing or has no value of the metric.
    """
    constraint = study_constraint(cfg)
    if constraint is None or not constraint.baselines:
        return constraint
    values = {}
    for name in constraint.baselines:
        trial = baseline_trial(cfg, trials, n_bits, name)
        why = ("did not report any epoch" if trial is None else
               "failed" if trial.get("status") == "failed" else None)
        metrics = (trial or {}).get("metrics", {})
        missing = [b.metric for b in constraint.bounds if b.baseline == name and not _finite(metrics.get(b.metric))]
        if why is None and missing:
            why = f"has no defined validation value of {', '.join(missing)}"
        if why is not None:
            raise ConstraintUnresolved(
                f"search.constraint '{constraint.text}' compares with the '{name}' baseline trial, which {why}; "
                "without its value no trial can be called feasible, so selection stops. Look at that trial's "
                "MLflow child run (tag fairtune.failure), or state the bound as a number.")
        values[name] = metrics
    return constraint.resolve(values)


def resolve_or_fail(cfg: ExperimentConfig, trials: Sequence[dict], n_bits: int, tracking_uri: str,
                    parent_run_id: str, log: Callable = print) -> Optional[Constraint]:
    """``resolve_constraint`` for a stage: an unresolvable constraint is logged, marks the MLflow parent
    run FAILED and ends the study."""
    try:
        return resolve_constraint(cfg, trials, n_bits)
    except ConstraintUnresolved as err:
        log(f"error: {err}")
        MlflowClient(tracking_uri).set_terminated(parent_run_id, "FAILED")
        raise


def trial_violations(constraint: Optional[Constraint], trials: Sequence[dict]) -> Optional[list[float]]:
    """Each trial's violation at its recorded epoch (0 = feasible), or None without a constraint."""
    if constraint is None:
        return None
    return [constraint.violation(t.get("metrics", {})) for t in trials]


def penalised(value: float, violation: float, objective: Objective, penalty: float) -> float:
    """``value`` moved against the objective's direction by ``penalty * violation`` (NaN if undefined)."""
    if violation == 0.0:
        return value
    if not math.isfinite(violation):
        return math.nan
    return value - objective.sign * penalty * violation


def feasibility_note(constraint: Constraint, violations: Sequence[float], chosen: int, what: str = "trials") -> str:
    """One log line: how many candidates are feasible, and a loud warning when none is."""
    n_ok = sum(1 for v in violations if v == 0.0)
    if n_ok:
        return (f"constraint '{constraint.resolved_text}': {n_ok} of {len(violations)} {what} feasible; "
                "infeasible ones rank below every feasible one")
    return (f"WARNING: no {what[:-1] if what.endswith('s') else what} satisfies search.constraint "
            f"'{constraint.resolved_text}' on validation; selected the least-violating one "
            f"(violation {violations[chosen]:.4g}). Relax the constraint or search longer.")


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
