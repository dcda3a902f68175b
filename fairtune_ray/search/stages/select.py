"""Stage 4, select: choose the configuration among the trials (validation data only) and list
every configuration to retrain: the selected one, the Fisher-only one (method ``both``) and the
fixed baselines, each with its role in the results table.

With ``search.constraint`` the choice is among the feasible candidates; which ones are feasible is
logged (terminal, ``constraint.md`` on the parent run) and kept with the selected trial
(``selected["constraint"]``), so the baselines' lr choice and the report apply the same bounds."""
from __future__ import annotations

from typing import Callable, Optional

from mlflow.tracking import MlflowClient

from fairtune_ray.common.tables import format_table
from fairtune_ray.config import ExperimentConfig
from fairtune_ray.config.constraint import Constraint
from fairtune_ray.metrics import parse_objective
from fairtune_ray.metrics.objectives import Objective
from fairtune_ray.models.adapters import NO_ADAPTER, peft_method_names
from fairtune_ray.search.constraint import feasibility_note, resolve_or_fail, trial_violations
from fairtune_ray.search.results import Role
from fairtune_ray.search.selection import constrained_order, select_trial
from fairtune_ray.search.space import bit_keys, config_bits, spec_from_trial_config, uses_mask_bits
from fairtune_ray.search.stages.types import Candidate, Confirmation, Prepared, Selection, TuneOutcome
from fairtune_ray.training.spec import TrialSpec, with_peft

SELECTED_LABELS = {"fairtune": "FairTune (selected)", "fisher": "Fisher (selected)", "both": "FairTune+Fisher (selected)"}
BASELINE_LABELS = {"full": "Full fine-tuning", "linear": "Linear probe", "bitfit": "BitFit", "attn_only": "Attention only",
                   "norm_only": "Norm only", "lora": "LoRA", "dora": "DoRA", "ia3": "IA3", "loha": "LoHa"}


def select(p: Prepared, tuned: TuneOutcome, confirmation: Optional[Confirmation] = None,
           log: Callable = print) -> Selection:
    """Among the confirmed trials when there are any (ranked by their seed statistic), else among all;
    with ``search.constraint`` among the feasible ones (the least-violating one when none is)."""
    cfg = p.cfg
    trials = _usable(p, tuned.trials, log)
    objective = parse_objective(cfg.train.objective)
    constraint = resolve_or_fail(cfg, tuned.trials, p.n_bits, p.tracking_uri, p.parent_run_id, log)
    full = _full_mask_trial(cfg, trials, p.n_bits)
    pool = confirmation.trials if confirmation is not None and confirmation.trials else trials
    violations = trial_violations(constraint, pool)
    if pool is not trials and cfg.search.selection == "best":  # the seed mean or its lower bound
        selected = pool[constrained_order([t["objective"] for t in pool], objective, violations)[0]]
    else:
        selected = select_trial(pool, cfg.search.selection, objective, baseline=full["metrics"] if full else None,
                                violations=violations)
    spec = spec_from_trial_config(selected["config"], cfg, p.space_name, p.n_bits, seed=cfg.train.seed)
    how = f"seed {confirmation.statistic} of {selected['n']} seeds" if pool is not trials else "best epoch"
    log(f"selected ({cfg.search.selection}): {spec.mask} lr={spec.lr:.2e} "
        f"val {cfg.train.objective}={selected['objective']:.4f} ({how})")
    if constraint is not None:
        selected = _record_feasibility(p, constraint, pool, violations, selected, log)
    candidates = [Candidate(SELECTED_LABELS[cfg.search.method], Role.SELECTED, spec)]
    fisher = _fisher_only_candidate(p, trials) if cfg.search.method == "both" else None
    if fisher is not None:
        candidates.append(fisher)
    candidates += baseline_candidates(cfg)
    return Selection(selected, candidates)


def _record_feasibility(p: Prepared, constraint: Constraint, pool: list[dict], violations: list[float],
                        selected: dict, log: Callable) -> dict:
    """Log the candidates' feasibility (terminal, ``constraint.md`` and params on the parent run) and
    return the selected trial with a ``constraint`` entry the later stages and the report read."""
    i = next(i for i, t in enumerate(pool) if t is selected)
    log(feasibility_note(constraint, violations, i))
    table = constraint_table(constraint, pool, violations, selected, parse_objective(p.cfg.train.objective))
    log(f"\n{table}")
    client = MlflowClient(p.tracking_uri)
    client.log_text(p.parent_run_id, table, "constraint.md")
    client.log_param(p.parent_run_id, "constraint.resolved", constraint.resolved_text)
    client.set_tag(p.parent_run_id, "fairtune.selected_feasible", str(violations[i] == 0.0).lower())
    return {**selected, "constraint": {"text": constraint.text, "resolved": constraint.resolved_text,
                                       "violation": violations[i], "feasible": violations[i] == 0.0,
                                       "n_feasible": sum(1 for v in violations if v == 0.0),
                                       "n_candidates": len(violations)}}


def constraint_table(constraint: Constraint, pool: list[dict], violations: list[float], selected: dict,
                     objective: Objective) -> str:
    """The candidates in selection's order (feasible first), with the bounded metrics and violations."""
    metrics = list(dict.fromkeys(b.metric for b in constraint.bounds))
    order = constrained_order([t["objective"] for t in pool], objective, violations)
    rows = [{"trial": str(pool[i]["trial_id"]) + (" *" if pool[i] is selected else ""), "objective": pool[i]["objective"],
             **{m: pool[i].get("metrics", {}).get(m, float("nan")) for m in metrics},
             "violation": violations[i], "feasible": "yes" if violations[i] == 0.0 else "no"} for i in order]
    columns = [("trial", "trial"), ("objective", "objective"), *[(m, f"val {m}") for m in metrics],
               ("violation", "violation"), ("feasible", f"feasible: {constraint.resolved_text}")]
    return format_table(rows, columns)


def _usable(p: Prepared, trials: list[dict], log: Callable) -> list[dict]:
    """Trials that did not fail; selecting among none is an error that points at the logs."""
    failed = [t for t in trials if t["status"] == "failed"]
    if failed:
        log(f"{len(failed)} trial(s) failed (see the MLflow tag fairtune.failure); selecting among the others")
    usable = [t for t in trials if t["status"] != "failed"]
    if not usable:
        MlflowClient(p.tracking_uri).set_terminated(p.parent_run_id, "FAILED")
        raise RuntimeError(f"every trial failed; see the MLflow child runs (tag fairtune.failure) and {p.exp_path}")
    return usable


def trial_bits(trial: dict, n_bits: int) -> str:
    return config_bits(trial["config"], bit_keys(n_bits))


def _all_ones_without_adapters(trial: dict, n_bits: int) -> bool:
    """Every group on and trained itself: with a PEFT method, all ones is that method's default placement."""
    return trial_bits(trial, n_bits) == "1" * n_bits and trial["config"].get("peft", NO_ADAPTER) == NO_ADAPTER


def _full_mask_trial(cfg: ExperimentConfig, trials: list[dict], n_bits: int) -> Optional[dict]:
    """The all-ones mask (full fine-tuning): the reference whose weakest group ``pareto`` serves."""
    if not uses_mask_bits(cfg):
        return None
    return next((t for t in trials if _all_ones_without_adapters(t, n_bits)), None)


def _fisher_only_candidate(p: Prepared, trials: list[dict]) -> Optional[Candidate]:
    """Method ``both``: the best all-ones-mask trial that used a Fisher option (the "Fisher" row)."""
    fisher_only = [t for t in trials if _all_ones_without_adapters(t, p.n_bits) and
                   spec_from_trial_config(t["config"], p.cfg, p.space_name, p.n_bits).uses_fisher]
    if not fisher_only:
        return None
    best = select_trial(fisher_only, "best", parse_objective(p.cfg.train.objective))
    return Candidate("Fisher", Role.FISHER, spec_from_trial_config(best["config"], p.cfg, p.space_name, p.n_bits))


def baseline_candidates(cfg: ExperimentConfig) -> list[Candidate]:
    """The configured baselines (``search.baselines``) at ``train.lr`` clipped to the searched range;
    stage ``baseline_lrs`` then picks each one's lr on validation."""
    lr = min(max(cfg.train.lr, cfg.search.lr_min), cfg.search.lr_max)
    return [Candidate(BASELINE_LABELS.get(b, b), Role.BASELINE, baseline_spec(cfg, b, lr)) for b in cfg.search.baselines]


def baseline_spec(cfg: ExperimentConfig, mask: str, lr: float) -> TrialSpec:
    """A baseline's spec; a PEFT baseline (lora, dora, ia3, loha) takes its settings from ``peft``."""
    spec = TrialSpec(mask=mask, lr=lr, label=mask)
    return with_peft(spec, cfg.peft, mask) if mask in peft_method_names() else spec
