"""Stage 5, baseline learning rates: every baseline gets its lr chosen on validation, as the selected
configuration got its own from the search.

A baseline retrained at one fixed lr is tuned less than the winner, and an undertrained baseline
makes any method look fair by comparison. Each baseline is trained on train with every lr of
``search.baseline_lrs`` (same epochs, seed ``train.seed``, in parallel Ray tasks given train and
validation only); the lr with the best validation objective is the one retrained and tested. With
``search.constraint`` the lr is chosen among the feasible ones first, by the bounds selection applied
(relative ones fixed at the search's baseline trials), as the selected configuration was.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Optional

from mlflow.tracking import MlflowClient

from fairtune_ray.common.tables import format_table
from fairtune_ray.config.constraint import Constraint, parse_constraint
from fairtune_ray.metrics import parse_objective
from fairtune_ray.search.results import Role
from fairtune_ray.search.selection import constrained_order
from fairtune_ray.search.stages.types import Candidate, Prepared, Selection
from fairtune_ray.search.validation_fits import run_validation_fits


def tune_baseline_lrs(p: Prepared, selection: Selection, log: Callable = print) -> Selection:
    cfg = p.cfg
    grid = cfg.search.baseline_lr_grid()
    baselines = [c for c in selection.candidates if c.role == Role.BASELINE]
    if len(grid) == 1 or not baselines:
        return Selection(selection.selected, [_with_lr(c, grid[0]) if c.role == Role.BASELINE else c
                                              for c in selection.candidates])
    specs = {(c.method, lr): replace(c.spec, lr=lr, seed=cfg.train.seed) for c in baselines for lr in grid}
    log(f"choosing the lr of {len(baselines)} baselines on validation from {', '.join(f'{lr:.1e}' for lr in grid)} "
        f"({len(specs)} Ray tasks)")
    fits = run_validation_fits(cfg, specs, p.data, p.checkpoint)
    objective = parse_objective(cfg.train.objective)
    constraint = selected_constraint(selection)
    tried = {c.method: [_tried(lr, fits[(c.method, lr)], constraint) for lr in grid] for c in baselines}
    chosen = {}
    for method, rows in tried.items():
        violations = [r["violation"] for r in rows] if constraint is not None else None
        chosen[method] = rows[constrained_order([r["objective"] for r in rows], objective, violations)[0]]["lr"]
    candidates = [_with_lr(c, chosen[c.method]) if c.method in chosen else c for c in selection.candidates]
    _log_choice(p, tried, chosen, cfg.train.objective, log, constraint)
    return Selection(selection.selected, candidates, tried)


def selected_constraint(selection: Selection) -> Optional[Constraint]:
    """The constraint selection applied, its relative bounds already fixed (``selected["constraint"]``)."""
    resolved = (selection.selected.get("constraint") or {}).get("resolved")
    return parse_constraint(resolved, ()) if resolved else None


def _tried(lr: float, fit: dict, constraint: Optional[Constraint]) -> dict:
    row = {"lr": lr, "objective": fit["objective"]}
    if constraint is not None:
        row["violation"] = constraint.violation(fit["metrics"])
    return row


def _with_lr(c: Candidate, lr: float) -> Candidate:
    return Candidate(c.method, c.role, replace(c.spec, lr=lr))


def _log_choice(p: Prepared, tried: dict[str, list[dict]], chosen: dict[str, float], objective: str,
                log: Callable, constraint: Optional[Constraint] = None) -> None:
    """The grid as a table (terminal and MLflow ``baseline_lrs.md``) and each chosen lr as a parent param."""
    rows = [{"baseline": m, "lr": f"{r['lr']:.1e}", "objective": r["objective"],
             "feasible": "yes" if r.get("violation") == 0.0 else f"no ({r.get('violation', math.nan):.3g})",
             "chosen": "*" if math.isclose(r["lr"], chosen[m]) else ""} for m, rs in tried.items() for r in rs]
    columns = [("baseline", "baseline"), ("lr", "lr"), ("objective", f"val {objective}")]
    if constraint is not None:
        columns.append(("feasible", f"feasible: {constraint.resolved_text}"))
    table = format_table(rows, [*columns, ("chosen", "chosen")])
    log(f"\nbaseline learning rates on validation:\n{table}")
    client = MlflowClient(p.tracking_uri)
    client.log_text(p.parent_run_id, table, "baseline_lrs.md")
    for method, lr in chosen.items():
        client.log_param(p.parent_run_id, f"baseline.{method.lower().replace(' ', '_')}.lr", f"{lr:.3e}")
