"""Build the Ray Tune ``Tuner``: HyperOpt TPE in a concurrency limiter, ASHA on the epoch.

Metric and mode are set only in ``TuneConfig`` (searcher and scheduler inherit them).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.hyperopt import HyperOptSearch

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.metrics import parse_objective
from fairtune_ray.search.space import matches_point
from fairtune_ray.search.tune_value import TUNE_METRIC



def make_searcher(cfg: ExperimentConfig, points: list[dict]) -> ConcurrencyLimiter:
    """Seeded TPE: the same config and seed propose the same first trials."""
    searcher = HyperOptSearch(points_to_evaluate=points or None, n_initial_points=cfg.search.n_initial_points,
                              random_state_seed=cfg.search.seed)
    return ConcurrencyLimiter(searcher, max_concurrent=cfg.search.max_concurrent)


class ProtectedASHA(ASHAScheduler):
    """ASHA that never stops the baseline trials: they still enter the rungs (so they set the bar
    for the others) but always run to ``train.epochs``, so every baseline is compared fully trained."""

    def __init__(self, *args, protected: Sequence[dict] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.protected = [dict(p) for p in protected]

    def is_protected(self, trial) -> bool:
        return any(matches_point(trial.config, p) for p in self.protected)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and self.is_protected(trial) and result.get(self._time_attr, 0) < self._max_t:
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action


def make_scheduler(cfg: ExperimentConfig, protected: Sequence[dict] = ()) -> ProtectedASHA:
    """ASHA on the epoch; ``protected`` configs (the baseline points) are never stopped early."""
    return ProtectedASHA(time_attr="epoch", max_t=cfg.train.epochs, grace_period=cfg.search.asha.grace_period,
                         reduction_factor=cfg.search.asha.reduction_factor, protected=protected)


def progress_reporter() -> tune.CLIReporter:
    return tune.CLIReporter(
        metric_columns={"epoch": "epoch", TUNE_METRIC: "best objective", "val/overall_auc": "val AUC",
                        "val/min_auc": "worst-grp AUC", "trainable_params": "trainable"},
        parameter_columns={"lr": "lr"}, max_report_frequency=15, sort_by_metric=True)


def trial_resources(cfg: ExperimentConfig) -> dict:
    """What Tune reserves per trial. A multi-worker trial only drives a TorchTrainer: its workers hold
    the real resources (Ray rejects an empty request, hence a small CPU fraction)."""
    if cfg.trial.workers > 1:
        return {"cpu": 0.01, "gpu": 0}
    return {"cpu": cfg.trial.resources.cpu, "gpu": cfg.trial.resources.gpu}


def build_tuner(cfg: ExperimentConfig, trainable: Callable, param_space: dict, points: list[dict],
                storage_path: str, name: str, callbacks: Optional[list] = None, *,
                scheduler: Optional[TrialScheduler] = None, stop: Any = None,
                reuse_actors: bool = False, verbose: int = 1) -> tune.Tuner:
    """The search's Tuner. ``scheduler`` replaces ASHA (e.g. ``FIFOScheduler()`` for a search that
    trains every trial to the end), ``stop`` is Tune's stop criterion (e.g. an epoch budget);
    the benchmarks use both to run a FairTune-style search through the same code."""
    objective = parse_objective(cfg.train.objective)
    return tune.Tuner(
        tune.with_resources(trainable, trial_resources(cfg)),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=TUNE_METRIC, mode=objective.mode, search_alg=make_searcher(cfg, points),
            scheduler=scheduler if scheduler is not None else make_scheduler(cfg),
            num_samples=cfg.search.num_samples, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_path, callbacks=callbacks or [], stop=stop,
            failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
            progress_reporter=progress_reporter(), verbose=verbose),
    )
