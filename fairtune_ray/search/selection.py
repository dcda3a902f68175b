"""Model selection across trials, following the MEDFAIR benchmark (docs/design.md#model-selection).

A single objective can hide trade-offs between groups, so besides ``best`` (best objective value)
two group-vector strategies are offered:

* ``pareto``: the non-dominated trials over per-group AUC vectors, then the one best for the
  weakest group of a reference (baseline) model: the group fairness work is meant to help.
* ``dto``: distance to the utopia point: each group's AUC divided by the best AUC any trial
  reached on that group, then the trial closest (L2) to all ones.

With ``search.constraint`` the strategy chooses among the feasible trials only (fairness-aware
Bayesian optimisation: the best objective subject to the bounds); ``constrained_order`` is the one
ranking rule (feasible first, then by violation) that confirmation and the report share.

Trials are ``{"trial_id": str, "metrics": {flat metrics, keys maybe prefixed}, ...}``.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from fairtune_ray.metrics.objectives import Objective

__all__ = ["STRATEGIES", "select_trial", "constrained_order", "pareto_front", "group_auc_matrix"]

STRATEGIES = ("best", "pareto", "dto")


def _tid(trial: Mapping[str, Any], i: int) -> str:
    return str(trial.get("trial_id", i))


def _metrics(trial: Mapping[str, Any]) -> Mapping[str, Any]:
    m = trial.get("metrics", {})
    return m if isinstance(m, Mapping) else {}


def _group_names(metric_dicts: Sequence[Mapping[str, Any]], prefix: str) -> list[str]:
    pat = re.compile(re.escape(prefix) + r"group/(.+)/auc$")
    names: dict[str, None] = {}
    for md in metric_dicts:
        for k in md:
            m = pat.match(k)
            if m:
                names.setdefault(m.group(1))
    return list(names)


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def group_auc_matrix(
    trials: Sequence[Mapping[str, Any]], prefix: str = ""
) -> tuple[list[int], list[str], np.ndarray]:
    """(indices of usable trials, group names, AUC matrix [trial, group]).

    Groups whose AUC is undefined in every trial (single-class group in the split) are dropped;
    a trial missing/NaN on any remaining group is unusable (NaN loses), not imputed.
    """
    mds = [_metrics(t) for t in trials]
    names = _group_names(mds, prefix)
    if not names:
        raise ValueError(f"no per-group AUC keys ('{prefix}group/<name>/auc') in the trials' metrics")
    full = np.array([[_as_float(md.get(f"{prefix}group/{n}/auc", float("nan"))) for n in names] for md in mds])
    keep_groups = np.isfinite(full).any(axis=0)
    if not keep_groups.any():
        raise ValueError("every group AUC is undefined (NaN) in every trial")
    names = [n for n, k in zip(names, keep_groups) if k]
    full = full[:, keep_groups]
    ok = np.isfinite(full).all(axis=1)
    rows = [i for i in range(len(trials)) if ok[i]]
    if not rows:
        raise ValueError("no trial has a defined AUC for every group")
    return rows, names, full[ok]


def _non_dominated(mat: np.ndarray) -> np.ndarray:
    """Boolean mask of rows not dominated (>= everywhere, > somewhere) by another row."""
    geq = (mat[:, None, :] >= mat[None, :, :]).all(axis=2)  # geq[j, i]: j >= i everywhere
    gt = (mat[:, None, :] > mat[None, :, :]).any(axis=2)
    dominated_by = geq & gt  # [j, i]: j dominates i
    return ~dominated_by.any(axis=0)


def pareto_front(trials: Sequence[Mapping[str, Any]], prefix: str = "") -> list[str]:
    """Trial ids on the Pareto front of per-group AUC (higher is better in every group)."""
    if not trials:
        raise ValueError("cannot compute a Pareto front of an empty trial list")
    rows, _, mat = group_auc_matrix(trials, prefix)
    mask = _non_dominated(mat)
    return [_tid(trials[i], i) for i, keep in zip(rows, mask) if keep]


def constrained_order(values: Sequence[float], objective: Objective,
                      violations: Optional[Sequence[float]] = None) -> list[int]:
    """Indices best first: feasible (violation 0) by value, then infeasible by violation, then value.

    A NaN value ranks last within its class, a NaN violation counts as unbounded; ties keep order.
    Without ``violations`` every index is feasible (the plain ranking by value).
    """
    def key(i: int) -> tuple:
        v = 0.0 if violations is None else _as_float(violations[i])
        v = math.inf if math.isnan(v) else v
        x = _as_float(values[i])
        return (v > 0.0, v, math.isnan(x), 0.0 if math.isnan(x) else -objective.sign * x, i)

    return sorted(range(len(values)), key=key)


def _objective_values(trials: Sequence[Mapping[str, Any]], objective: Objective, prefix: str) -> list[float]:
    out = []
    for t in trials:
        try:
            out.append(objective.value(_metrics(t), prefix))
        except KeyError:
            out.append(float("nan"))
    return out


def select_trial(
    trials: Sequence[Mapping[str, Any]],
    strategy: str,
    objective: Objective,
    baseline: Optional[Mapping[str, Any]] = None,
    prefix: str = "",
    violations: Optional[Sequence[float]] = None,
) -> Mapping[str, Any]:
    """Pick one trial (returned as given) by ``best``, ``pareto`` or ``dto``; ties go to the earlier trial.

    ``baseline`` (for ``pareto``) is the reference model's metrics dict (or a trial dict holding
    one), normally full fine-tuning; its lowest-AUC group is the one the pick must serve best.
    Without it, the group with the lowest mean AUC across the trials is used.

    ``violations`` (``search.constraint``, one per trial, 0 = feasible): the strategy picks among the
    feasible trials only; when none is feasible, the least-violating trial is returned.
    """
    if not trials:
        raise ValueError("select_trial: the trial list is empty (did every trial fail?)")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    if violations is not None:
        feasible = [t for t, v in zip(trials, violations) if _as_float(v) == 0.0]
        if not feasible:
            return trials[constrained_order(_objective_values(trials, objective, prefix), objective, violations)[0]]
        trials = feasible

    if strategy == "best":
        values = _objective_values(trials, objective, prefix)
        if not any(math.isfinite(v) for v in values):
            raise ValueError(
                f"no trial has a defined value of objective '{objective.name}' (prefix '{prefix}')"
            )
        return trials[constrained_order(values, objective)[0]]

    rows, names, mat = group_auc_matrix(trials, prefix)

    if strategy == "dto":
        best = mat.max(axis=0)
        ratio = mat / np.where(best > 0, best, 1.0)
        dist = np.sqrt(((1.0 - ratio) ** 2).sum(axis=1))
        return trials[rows[int(np.argmin(dist))]]

    # pareto
    front = np.flatnonzero(_non_dominated(mat))
    weakest = _weakest_group(baseline, names, mat, prefix)
    j = names.index(weakest)
    # highest AUC on the weakest group; ties by mean group AUC, then trial order
    order = sorted(front, key=lambda r: (-mat[r, j], -mat[r].mean(), r))
    return trials[rows[order[0]]]


def _weakest_group(
    baseline: Optional[Mapping[str, Any]], names: list[str], mat: np.ndarray, prefix: str
) -> str:
    """The baseline's lowest-AUC group among ``names``, or the lowest mean AUC across trials."""
    if baseline is None:
        return names[int(np.argmin(mat.mean(axis=0)))]
    md = baseline.get("metrics") if isinstance(baseline.get("metrics"), Mapping) else baseline
    vals = []
    for n in names:
        v = _as_float(md.get(f"{prefix}group/{n}/auc", float("nan")))
        if math.isnan(v):  # also accept an un-prefixed baseline dict
            v = _as_float(md.get(f"group/{n}/auc", float("nan")))
        vals.append(v)
    arr = np.asarray(vals)
    if not np.isfinite(arr).any():
        raise ValueError(
            f"the baseline has no defined per-group AUC for groups {names} (keys '{prefix}group/<name>/auc')"
        )
    return names[int(np.nanargmin(arr))]
