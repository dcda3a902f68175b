"""Noise-aware selection, pure logic: best-so-far Tune value, ASHA that spares the baselines, the
confirmation statistics, the baselines' lr grid, the grace period that covers the warm-up."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from fairtune_ray.config import load_config
from fairtune_ray.metrics import compute_metrics, objective_bound, parse_objective
from fairtune_ray.search.space import baseline_points, matches_point
from fairtune_ray.search.stages.confirm import confirmed_trial, top_trials
from fairtune_ray.search.tune_value import TUNE_METRIC, BestSoFar
from fairtune_ray.search.tuner import make_scheduler


def test_tune_value_is_best_so_far_and_nan_never_wins():
    cfg = load_config(None)
    best = BestSoFar(cfg)
    reported = [best({"objective": v})[TUNE_METRIC] for v in (math.nan, 0.6, 0.5, 0.7, math.nan)]
    assert math.isnan(reported[0]) and reported[1:] == [0.6, 0.6, 0.7, 0.7]
    minimised = BestSoFar(load_config(None, overrides={"train.objective": "auc_gap"}))
    assert [minimised({"objective": v})[TUNE_METRIC] for v in (0.3, 0.1, 0.2)] == [0.3, 0.1, 0.1]
    lcb = BestSoFar(load_config(None, overrides={"search.tune_value": "lcb"}))
    assert lcb({"objective": 0.9, "objective_lcb": 0.4})[TUNE_METRIC] == 0.4


def _trial(tid: str, config: dict):
    return SimpleNamespace(trial_id=tid, config=config)


def test_asha_never_stops_a_baseline_point():
    cfg = load_config(None, overrides={"train.epochs": 8, "search.asha.grace_period": 1})
    points = baseline_points(cfg, 4)
    sched = make_scheduler(cfg, points)
    sched.set_search_properties(TUNE_METRIC, "max")
    good = [_trial(f"g{i}", {"lr": 1e-4 * (i + 1), "m00": 1, "m01": 0, "m02": 1, "m03": 0}) for i in range(3)]
    full = _trial("full", dict(points[0]))
    for t in good + [full]:
        sched.on_trial_add(None, t)
    for t in good:
        sched.on_trial_result(None, t, {"epoch": 1, TUNE_METRIC: 0.9})
    # the worst result at rung 1: plain ASHA stops it, the protected scheduler keeps it
    assert sched.on_trial_result(None, full, {"epoch": 1, TUNE_METRIC: 0.1}) == TrialScheduler.CONTINUE
    weak = _trial("weak", {"lr": 3e-4, "m00": 0, "m01": 0, "m02": 0, "m03": 1})
    sched.on_trial_add(None, weak)
    assert sched.on_trial_result(None, weak, {"epoch": 1, TUNE_METRIC: 0.1}) == TrialScheduler.STOP
    assert matches_point({**points[1], "lr": float(points[1]["lr"])}, points[1])
    assert not matches_point({**points[1], "lr": points[1]["lr"] * (1 + 1e-9)}, points[1])


def test_grace_period_covers_the_warm_up():
    assert load_config(None, overrides={"train.warmup_epochs": 0.5, "train.epochs": 10}).search.asha.grace_period == 2
    assert load_config(None, overrides={"train.warmup_epochs": 2, "train.epochs": 10}).search.asha.grace_period == 3
    assert load_config(None, overrides={"train.warmup_epochs": 3, "train.epochs": 2}).search.asha.grace_period == 2
    assert load_config(None, overrides={"search.asha.grace_period": 1}).search.asha.grace_period == 1


def test_baseline_lr_grid_spans_the_searched_range():
    cfg = load_config(None, overrides={"search.lr_min": 1e-5, "search.lr_max": 1e-3})
    assert cfg.search.baseline_lr_grid() == pytest.approx([1e-5, 1e-4, 1e-3])
    assert load_config(None, overrides={"search.baseline_lrs": [3e-4]}).search.baseline_lr_grid() == [3e-4]


def test_confirmation_ranks_by_seed_statistics():
    objective = parse_objective("min_auc")
    trials = [{"trial_id": "a", "objective": 0.7, "config": {}, "status": "completed"},
              {"trial_id": "b", "objective": 0.9, "config": {}, "status": "stopped_early"},
              {"trial_id": "c", "objective": math.nan, "config": {}, "status": "completed"},
              {"trial_id": "d", "objective": 0.95, "config": {}, "status": "failed"}]
    assert [t["trial_id"] for t in top_trials(trials, objective, 2)] == ["b", "a"]
    runs = [{"objective": v, "metrics": {"min_auc": v, "group/x/auc": v + 0.1}, "splits_given": ["train", "val"]}
            for v in (0.6, 0.8)]
    mean_based = confirmed_trial(trials[1], runs, objective, "mean")
    assert mean_based["objective"] == pytest.approx(0.7) and mean_based["metrics"]["group/x/auc"] == pytest.approx(0.8)
    lcb_based = confirmed_trial(trials[1], runs, objective, "lcb")
    assert lcb_based["objective"] == pytest.approx(0.7 - np.std([0.6, 0.8], ddof=1) / math.sqrt(2))
    assert lcb_based["search_objective"] == 0.9 and lcb_based["splits_given"] == ["train", "val"]
    gap = confirmed_trial(trials[1], runs, parse_objective("auc_gap"), "lcb")
    assert gap["objective"] > gap["mean"]  # the pessimistic side of a minimised objective


def test_objective_bound_is_a_quantile_of_the_stratified_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    g = (rng.random(300) < 0.2).astype(int)
    s = 0.4 * y + rng.random(300)
    point = compute_metrics(y, s, g)
    lo = objective_bound(y, s, g, parse_objective("min_auc"), n_boot=200, quantile=0.1)
    hi = objective_bound(y, s, g, parse_objective("auc_gap"), n_boot=200, quantile=0.1)
    assert lo < point["min_auc"] and hi > point["auc_gap"]
    combo = objective_bound(y, s, g, parse_objective("min_auc - 0.5*auc_gap"), n_boot=200, quantile=0.1)
    assert combo < point["min_auc"] - 0.5 * point["auc_gap"]
    assert objective_bound(y, s, g, parse_objective("min_auc"), n_boot=200, quantile=0.1) == lo  # seeded
