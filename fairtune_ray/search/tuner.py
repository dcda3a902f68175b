"""Build the Ray Tune ``Tuner``: HyperOpt TPE in a concurrency limiter, ASHA on the epoch.

Metric and mode are set only in ``TuneConfig`` (searcher and scheduler inherit them).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Sequence

from hyperopt.base import JOB_STATE_DONE
from hyperopt.fmin import generate_trial
from hyperopt.utils import coarse_utcnow
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.hyperopt import HyperOptSearch

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.metrics import parse_objective
from fairtune_ray.search.space import matches_point
from fairtune_ray.search.tpe_window import bounded_history
from fairtune_ray.search.tune_value import TUNE_METRIC


class TidIndex:
    """A HyperOpt study's documents by tid. The study only ever appends documents (failed ones stay),
    so the index follows it by reading the ones added since it last looked."""

    def __init__(self, study) -> None:
        self.study, self._docs = study, {}

    def get(self, tid: int) -> dict:
        if tid not in self._docs:
            self._docs.update((d["tid"], d) for d in self.study._dynamic_trials[len(self._docs):])
        return self._docs[tid]


class WarmStartedHyperOpt(HyperOptSearch):
    """HyperOpt TPE that also starts from points evaluated before this study (``search.warm_start``).

    Ray's ``HyperOptSearch`` (2.60) takes points to evaluate but, unlike ``OptunaSearch``, no
    ``evaluated_rewards``. Its ``_setup_hyperopt`` puts this study's own points to evaluate into the
    hyperopt ``Trials`` as new documents (tids 0..n-1, reversed) and ``suggest`` hands them out by
    position (``trials[n-1]``, ``trials[n-2]``, ...), before asking TPE. The evaluated points are
    appended after them as finished documents (state DONE, loss = ``metric_op`` x reward, the sign
    Tune's own results get): the baselines and seed points keep their positions and still run first,
    and TPE models the evaluated ones (they count towards ``n_initial_points``) without re-running them.
    """

    def __init__(self, *args, evaluated_points: Sequence[dict] = (), evaluated_rewards: Sequence[float] = (),
                 window: Optional[int] = None, **kwargs) -> None:
        if len(evaluated_points) != len(evaluated_rewards):
            raise ValueError(f"{len(evaluated_points)} evaluated points but {len(evaluated_rewards)} rewards")
        self._evaluated = [(copy.deepcopy(dict(p)), float(r)) for p, r in zip(evaluated_points, evaluated_rewards)]
        self._window = window
        super().__init__(*args, **kwargs)  # sets up hyperopt now when given a space (needs the mode then)

    def _setup_hyperopt(self) -> None:
        super()._setup_hyperopt()
        if self._window:  # TPE fits on a bounded history (search.tpe_window)
            self.algo = bounded_history(self.algo, self._window)
        if self._evaluated:
            self._hpopt_trials.insert_trial_docs(self._evaluated_docs())
            self._hpopt_trials.refresh()
        self._tids = TidIndex(self._hpopt_trials)

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._tids = TidIndex(self._hpopt_trials)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._tids = TidIndex(self._hpopt_trials)  # the restored study, whichever version saved it

    def _get_hyperopt_trial(self, trial_id: str) -> Optional[dict]:
        """The study's document of a live trial, by its tid. Ray's scans the whole study for it at every
        result, which makes a trial's cost grow with the study."""
        if trial_id not in self._live_trial_mapping:
            return None
        return self._tids.get(self._live_trial_mapping[trial_id][0])

    def _evaluated_docs(self) -> list[dict]:
        tids = self._hpopt_trials.new_trial_ids(len(self._evaluated))
        now = coarse_utcnow()
        docs = []
        for tid, (point, reward) in zip(tids, self._evaluated):
            config = copy.deepcopy(point)
            self._convert_categories_to_indices(config)  # hyperopt stores a choice as its index
            doc = generate_trial(tid, config)
            doc.update(state=JOB_STATE_DONE, result={"loss": self.metric_op * reward, "status": "ok"},
                       book_time=now, refresh_time=now)
            docs.append(doc)
        return docs


def make_searcher(cfg: ExperimentConfig, points: list[dict], *, evaluated_points: Sequence[dict] = (),
                  evaluated_rewards: Sequence[float] = ()) -> ConcurrencyLimiter:
    """Seeded TPE: the same config and seed propose the same first trials. ``points`` run first;
    ``evaluated_points`` with their ``evaluated_rewards`` (a warm start) are history TPE learns from;
    TPE fits on at most ``search.tpe_window`` finished trials (search/tpe_window.py)."""
    searcher = WarmStartedHyperOpt(points_to_evaluate=points or None, n_initial_points=cfg.search.n_initial_points,
                                   random_state_seed=cfg.search.seed, evaluated_points=evaluated_points,
                                   evaluated_rewards=evaluated_rewards, window=cfg.search.tpe_window)
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
                reuse_actors: Optional[bool] = None, verbose: int = 1, evaluated_points: Sequence[dict] = (),
                evaluated_rewards: Sequence[float] = ()) -> tune.Tuner:
    """The search's Tuner. ``scheduler`` replaces ASHA (e.g. ``FIFOScheduler()`` for a search that
    trains every trial to the end), ``stop`` is Tune's stop criterion (e.g. an epoch budget);
    the benchmarks use both to run a FairTune-style search through the same code. ``evaluated_points``
    and ``evaluated_rewards``: a warm start (``search/warm_start.py``), given to TPE as history.
    ``reuse_actors`` None = ``search.reuse_actors`` (warm trial processes by default)."""
    objective = parse_objective(cfg.train.objective)
    return tune.Tuner(
        tune.with_resources(trainable, trial_resources(cfg)),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=TUNE_METRIC, mode=objective.mode, search_alg=make_searcher(cfg, points, evaluated_points=evaluated_points,
                                                                       evaluated_rewards=evaluated_rewards),
            scheduler=scheduler if scheduler is not None else make_scheduler(cfg),
            num_samples=cfg.search.num_samples,
            reuse_actors=cfg.search.reuse_actors if reuse_actors is None else reuse_actors),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_path, callbacks=callbacks or [], stop=stop,
            failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
            progress_reporter=progress_reporter(), verbose=verbose),
    )
