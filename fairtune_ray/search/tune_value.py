"""What a trial tells Ray Tune each epoch: the value of its best epoch so far.

TPE learns from a trial's last report and ASHA compares trials at a rung; selection takes each trial's
best epoch. Reporting the best so far makes all three judge a trial by the same number. With
``search.tune_value: lcb`` that number is the bootstrap lower bound of the objective instead of its
point value (``training.loop.validation_bound``).

With ``search.constraint`` the best epoch is still chosen by the objective (it is the epoch selection
judges and a retrain restores), and its value is *penalised* when it breaks an absolute bound:
``value - penalty * violation`` for a maximised objective (``+`` when minimised), ``penalty`` being
``search.constraint_penalty``. So TPE and ASHA see the number selection would rank the trial by, up
to the relative bounds, which need a baseline trial that may still be running (``search/constraint.py``).
An epoch whose bounded metric is undefined reports NaN, which never wins.
"""
from __future__ import annotations

import math

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.metrics import parse_objective
from fairtune_ray.search.constraint import VIOLATION_KEY, penalised, study_constraint

#: the metric Tune, TPE and ASHA optimise
TUNE_METRIC = "search_objective"
#: prefix of the validation metrics in a per-epoch record
VAL_PREFIX = "val/"


def epoch_value_key(cfg: ExperimentConfig) -> str:
    """The per-epoch record key the search ranks epochs and trials by."""
    return "objective_lcb" if cfg.search.tune_value == "lcb" else "objective"


class BestSoFar:
    """Adds ``TUNE_METRIC`` to each epoch's record: the value of the best epoch so far by the objective
    (NaN never wins), penalised when that epoch breaks an absolute bound of ``search.constraint``; with a
    constraint also ``VIOLATION_KEY``, this epoch's violation of those bounds."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.key = epoch_value_key(cfg)
        self.objective = parse_objective(cfg.train.objective)
        constraint = study_constraint(cfg)
        self.bounds = constraint.absolute_part() if constraint is not None else None
        self.penalty = cfg.search.constraint_penalty
        self.best = math.nan
        self.reported = math.nan

    def __call__(self, record: dict) -> dict:
        value = float(record.get(self.key, math.nan))
        out = dict(record)
        violation = 0.0
        if self.bounds is not None:
            violation = out[VIOLATION_KEY] = self.bounds.violation(record, VAL_PREFIX)
        if self.objective.better(value, self.best):
            self.best = value
            self.reported = penalised(value, violation, self.objective, self.penalty)
        out[TUNE_METRIC] = self.reported
        return out
