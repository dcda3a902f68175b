"""What a trial tells Ray Tune each epoch: the best value so far of its validation objective.

TPE learns from a trial's last report and ASHA compares trials at a rung; selection takes each trial's
best epoch. Reporting the best so far makes all three judge a trial by the same number. With
``search.tune_value: lcb`` that number is the bootstrap lower bound of the objective instead of its
point value (``training.loop.validation_bound``).
"""
from __future__ import annotations

import math

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.metrics import parse_objective

#: the metric Tune, TPE and ASHA optimise
TUNE_METRIC = "search_objective"


def epoch_value_key(cfg: ExperimentConfig) -> str:
    """The per-epoch record key the search ranks epochs and trials by."""
    return "objective_lcb" if cfg.search.tune_value == "lcb" else "objective"


class BestSoFar:
    """Adds ``TUNE_METRIC`` (the best per-epoch value so far; NaN never wins) to each epoch's record."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.key = epoch_value_key(cfg)
        self.objective = parse_objective(cfg.train.objective)
        self.best = math.nan

    def __call__(self, record: dict) -> dict:
        value = float(record.get(self.key, math.nan))
        if self.objective.better(value, self.best):
            self.best = value
        return {**record, TUNE_METRIC: self.best}
