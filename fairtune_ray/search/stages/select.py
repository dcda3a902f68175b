"""Stage 4, select: choose the configuration among the trials (validation data only) and list
every configuration to retrain: the selected one, the Fisher-only one (method ``both``) and the
fixed baselines, each with its role in the results table."""
from __future__ import annotations

from typing import Callable, Optional

from mlflow.tracking import MlflowClient

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.metrics import parse_objective
from fairtune_ray.metrics.objectives import Objective
from fairtune_ray.search.results import Role
from fairtune_ray.search.selection import select_trial
from fairtune_ray.search.space import bit_keys, config_bits, spec_from_trial_config, uses_mask_bits
from fairtune_ray.search.stages.types import Candidate, Confirmation, Prepared, Selection, TuneOutcome
from fairtune_ray.training.spec import TrialSpec

SELECTED_LABELS = {"fairtune": "FairTune (selected)", "fisher": "Fisher (selected)", "both": "FairTune+Fisher (selected)"}
BASELINE_LABELS = {"full": "Full fine-tuning", "linear": "Linear probe", "bitfit": "BitFit", "attn_only": "Attention only",
                   "norm_only": "Norm only", "lora": "LoRA"}


def select(p: Prepared, tuned: TuneOutcome, confirmation: Optional[Confirmation] = None,
           log: Callable = print) -> Selection:
    """Among the confirmed trials when there are any (ranked by their seed statistic), else among all."""
    cfg = p.cfg
    trials = _usable(p, tuned.trials, log)
    objective = parse_objective(cfg.train.objective)
    full = _full_mask_trial(cfg, trials, p.n_bits)
    pool = confirmation.trials if confirmation is not None and confirmation.trials else trials
    if pool is not trials and cfg.search.selection == "best":
        selected = _best_by_value(pool, objective)  # the seed mean or its lower bound
    else:
        selected = select_trial(pool, cfg.search.selection, objective, baseline=full["metrics"] if full else None)
    spec = spec_from_trial_config(selected["config"], cfg, p.space_name, p.n_bits, seed=cfg.train.seed)
    how = f"seed {confirmation.statistic} of {selected['n']} seeds" if pool is not trials else "best epoch"
    log(f"selected ({cfg.search.selection}): {spec.mask} lr={spec.lr:.2e} "
        f"val {cfg.train.objective}={selected['objective']:.4f} ({how})")
    candidates = [Candidate(SELECTED_LABELS[cfg.search.method], Role.SELECTED, spec)]
    fisher = _fisher_only_candidate(p, trials) if cfg.search.method == "both" else None
    if fisher is not None:
        candidates.append(fisher)
    candidates += baseline_candidates(cfg)
    return Selection(selected, candidates)


def _best_by_value(trials: list[dict], objective: Objective) -> dict:
    """The trial with the best ``objective`` field; ties go to the earlier (better-ranked) one."""
    best = trials[0]
    for t in trials[1:]:
        if objective.better(float(t["objective"]), float(best["objective"])):
            best = t
    return best


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


def _full_mask_trial(cfg: ExperimentConfig, trials: list[dict], n_bits: int) -> Optional[dict]:
    """The all-ones mask (full fine-tuning): the reference whose weakest group ``pareto`` serves."""
    if not uses_mask_bits(cfg):
        return None
    return next((t for t in trials if trial_bits(t, n_bits) == "1" * n_bits), None)


def _fisher_only_candidate(p: Prepared, trials: list[dict]) -> Optional[Candidate]:
    """Method ``both``: the best all-ones-mask trial that used a Fisher option (the "Fisher" row)."""
    fisher_only = [t for t in trials if trial_bits(t, p.n_bits) == "1" * p.n_bits and
                   spec_from_trial_config(t["config"], p.cfg, p.space_name, p.n_bits).uses_fisher]
    if not fisher_only:
        return None
    best = select_trial(fisher_only, "best", parse_objective(p.cfg.train.objective))
    return Candidate("Fisher", Role.FISHER, spec_from_trial_config(best["config"], p.cfg, p.space_name, p.n_bits))


def baseline_candidates(cfg: ExperimentConfig) -> list[Candidate]:
    """The configured baselines (``search.baselines``) at ``train.lr`` clipped to the searched range;
    stage ``baseline_lrs`` then picks each one's lr on validation."""
    lr = min(max(cfg.train.lr, cfg.search.lr_min), cfg.search.lr_max)
    return [Candidate(BASELINE_LABELS.get(b, b), Role.BASELINE, TrialSpec(mask=b, lr=lr, label=b))
            for b in cfg.search.baselines]
