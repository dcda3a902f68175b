"""search.constraint: parsing at config load, feasibility of trials, constrained selection and ranking,
and the penalised value TPE and ASHA see."""
from __future__ import annotations

import math

import pytest

from fairtune_ray.config import ConfigError, load_config
from fairtune_ray.config.constraint import Bound, parse_constraint
from fairtune_ray.metrics import parse_objective
from fairtune_ray.search.constraint import (
    VIOLATION_KEY, ConstraintUnresolved, penalised, resolve_constraint, study_constraint, trial_violations,
)
from fairtune_ray.search.selection import constrained_order, select_trial
from fairtune_ray.search.space import baseline_points
from fairtune_ray.search.stages.confirm import top_trials
from fairtune_ray.search.tune_value import TUNE_METRIC, BestSoFar

NAN = float("nan")
N_BITS = 4


def cfg_with(constraint, **more):
    return load_config(None, overrides={"search.constraint": constraint, **more})


def trial(tid, config=None, status="completed", **metrics):
    return {"trial_id": tid, "config": config or {"lr": 3e-4, "m00": 1, "m01": 0, "m02": 1, "m03": 0},
            "metrics": metrics, "objective": metrics.get("overall_auc", NAN), "status": status}


def baseline_trials(cfg, full=None, linear=None, full_status="completed"):
    full_point, linear_point = baseline_points(cfg, N_BITS)
    return [trial("full", dict(full_point), full_status, **(full or {})),
            trial("linear", dict(linear_point), **(linear or {}))]


# --- parsing -------------------------------------------------------------------------------------

def test_absolute_relative_and_joined_bounds_parse():
    c = parse_constraint("min_auc >= 0.75", ["full", "linear"])
    assert c.bounds == (Bound("min_auc", ">=", 0.75),) and not c.baselines
    c = parse_constraint("auc_gap <= full + 0.02 and min_auc>=.7 AND eodds_diff <= linear", ["full", "linear"])
    assert [b.text for b in c.bounds] == ["auc_gap <= full + 0.02", "min_auc >= 0.7", "eodds_diff <= linear"]
    assert c.baselines == ["full", "linear"] and c.bounds[0].offset == pytest.approx(0.02)
    assert parse_constraint("auc_gap <= full - 0.01", ["full"]).bounds[0].offset == pytest.approx(-0.01)
    assert parse_constraint("min_auc >= -1e-3", []).bounds[0].value == pytest.approx(-1e-3)


def test_config_keeps_the_text_and_defaults_to_none():
    assert load_config(None).search.constraint is None
    assert load_config(None).search.constraint_penalty == 10.0
    assert cfg_with("  auc_gap <= full ").search.constraint == "auc_gap <= full"


@pytest.mark.parametrize("text, words", [
    ("min_acu >= 0.7", ["unknown metric 'min_acu'", "known metrics: ", "min_auc", "eodds_diff", "baselines"]),
    ("min_auc > 0.7", ["operator '>'", ">= or <="]),
    ("min_auc == 0.7", ["operator '=='"]),
    ("min_auc >= fulll", ["'fulll'", "baselines of this search: full, linear"]),
    ("min_auc >= 0.7 and", ["cannot read the bound"]),
    ("min_auc", ["cannot parse 'min_auc'"]),
    ("min_auc >= full * 2", ["cannot read the bound 'full * 2'"]),
])
def test_a_typo_is_a_config_error_naming_the_key(text, words):
    with pytest.raises(ConfigError) as err:
        cfg_with(text)
    msg = str(err.value)
    assert "search.constraint" in msg
    for w in words:
        assert w in msg


def test_a_baseline_the_search_does_not_run_is_a_config_error():
    with pytest.raises(ConfigError, match=r"search\.constraint.*'linear'.*baselines of this search: full \("):
        cfg_with("auc_gap <= linear", **{"search.method": "fisher"})  # the Fisher search has one baseline point
    with pytest.raises(ConfigError, match=r"'linear'.*baselines of this search: full \("):
        cfg_with("auc_gap <= linear", **{"search.num_samples": 1})  # the second point is never run
    assert cfg_with("auc_gap <= full", **{"search.method": "fisher"}).search.constraint == "auc_gap <= full"


# --- feasibility ---------------------------------------------------------------------------------

def test_violation_is_the_summed_distance_on_the_wrong_side():
    c = parse_constraint("min_auc >= 0.75 and auc_gap <= 0.1", [])
    assert c.violation({"min_auc": 0.8, "auc_gap": 0.05}) == 0.0
    assert c.violation({"min_auc": 0.7, "auc_gap": 0.05}) == pytest.approx(0.05)
    assert c.violation({"val/min_auc": 0.7, "val/auc_gap": 0.13}, "val/") == pytest.approx(0.08)
    assert c.violation({"min_auc": 0.75, "auc_gap": 0.1}) == 0.0  # the bound itself is feasible
    assert c.violation({"min_auc": NAN, "auc_gap": 0.0}) == math.inf  # undefined breaks its bound
    assert c.violation({"auc_gap": 0.0}) == math.inf
    with pytest.raises(ValueError, match="resolve it first"):
        parse_constraint("auc_gap <= full", ["full"]).violation({"auc_gap": 0.1})


def test_relative_bounds_resolve_at_the_baseline_trial_and_text_round_trips():
    cfg = cfg_with("auc_gap <= full + 0.01 and min_auc >= linear and overall_auc >= 0.5")
    trials = baseline_trials(cfg, full={"auc_gap": 0.1234567891234}, linear={"min_auc": 0.6}) + [
        trial("t", auc_gap=0.2, min_auc=0.9)]
    c = resolve_constraint(cfg, trials, N_BITS)
    assert [b.value for b in c.bounds] == pytest.approx([0.1334567891234, 0.6, 0.5])
    assert c.text == cfg.search.constraint
    assert parse_constraint(c.resolved_text, []).bounds == c.bounds  # exact floats survive the text
    assert trial_violations(c, trials[:1]) == [pytest.approx(math.inf)]  # the full trial has no min_auc
    assert study_constraint(load_config(None)) is None and resolve_constraint(load_config(None), trials, N_BITS) is None


@pytest.mark.parametrize("full_status, full_metrics, why", [
    ("failed", {"auc_gap": 0.1}, "which failed"),
    ("completed", {"auc_gap": NAN}, "which has no defined validation value of auc_gap"),
])
def test_an_unusable_baseline_trial_stops_selection(full_status, full_metrics, why):
    cfg = cfg_with("auc_gap <= full")
    trials = baseline_trials(cfg, full=full_metrics, full_status=full_status)
    with pytest.raises(ConstraintUnresolved, match=f"'full' baseline trial, {why}.*selection stops"):
        resolve_constraint(cfg, trials, N_BITS)
    with pytest.raises(ConstraintUnresolved, match="did not report any epoch"):
        resolve_constraint(cfg, trials[1:], N_BITS)


# --- selection -----------------------------------------------------------------------------------

def _candidates():
    """b has the best objective but breaks min_auc >= 0.7; a is the best feasible trial."""
    return [trial("a", overall_auc=0.85, min_auc=0.72, **{"group/x/auc": 0.9, "group/y/auc": 0.72}),
            trial("b", overall_auc=0.91, min_auc=0.60, **{"group/x/auc": 0.95, "group/y/auc": 0.60}),
            trial("c", overall_auc=0.80, min_auc=0.75, **{"group/x/auc": 0.82, "group/y/auc": 0.75}),
            trial("d", overall_auc=0.88, min_auc=0.69, **{"group/x/auc": 0.91, "group/y/auc": 0.69})]


def test_the_best_infeasible_trial_ranks_below_every_feasible_one():
    ts, obj = _candidates(), parse_objective("overall_auc")
    c = parse_constraint("min_auc >= 0.7", [])
    v = trial_violations(c, ts)
    assert select_trial(ts, "best", obj)["trial_id"] == "b"  # unconstrained
    assert select_trial(ts, "best", obj, violations=v)["trial_id"] == "a"
    assert [ts[i]["trial_id"] for i in constrained_order([t["objective"] for t in ts], obj, v)] == ["a", "c", "d", "b"]
    # the group-vector strategies choose among the feasible trials too
    assert select_trial(ts, "pareto", obj, violations=v)["trial_id"] in {"a", "c"}
    assert select_trial(ts, "dto", obj, violations=v)["trial_id"] in {"a", "c"}
    assert select_trial(ts, "pareto", obj)["trial_id"] in {"b", "c", "d"}


def test_without_a_feasible_trial_the_least_violating_one_is_selected():
    ts, obj = _candidates(), parse_objective("overall_auc")
    v = trial_violations(parse_constraint("min_auc >= 0.8", []), ts)
    for strategy in ("best", "pareto", "dto"):
        assert select_trial(ts, strategy, obj, violations=v)["trial_id"] == "c"  # 0.05 short
    # equal violations: the better objective wins; an undefined metric is the worst violation
    tied = [trial("x", overall_auc=0.7, min_auc=0.5), trial("y", overall_auc=0.8, min_auc=0.5),
            trial("z", overall_auc=0.99, min_auc=NAN)]
    vt = trial_violations(parse_constraint("min_auc >= 0.8", []), tied)
    assert select_trial(tied, "best", obj, violations=vt)["trial_id"] == "y"


def test_constrained_order_for_a_minimised_objective_and_nan_values():
    obj = parse_objective("auc_gap")
    assert constrained_order([0.3, NAN, 0.1, 0.2], obj) == [2, 3, 0, 1]
    assert constrained_order([0.3, NAN, 0.1, 0.2], obj, [0.0, 0.0, 0.5, 0.0]) == [3, 0, 1, 2]
    assert constrained_order([0.1, 0.2], obj, [NAN, 0.1]) == [1, 0]  # a NaN violation is unbounded


def test_confirmation_takes_its_top_k_among_feasible_trials_first():
    ts, obj = _candidates(), parse_objective("overall_auc")
    c = parse_constraint("min_auc >= 0.7", [])
    assert [t["trial_id"] for t in top_trials(ts, obj, 2)] == ["b", "d"]
    assert [t["trial_id"] for t in top_trials(ts, obj, 2, c)] == ["a", "c"]
    assert [t["trial_id"] for t in top_trials(ts, obj, 3, c)] == ["a", "c", "d"]  # then the least violating


# --- what TPE and ASHA see -----------------------------------------------------------------------

def _epoch(objective, min_auc):
    return {"objective": objective, "val/overall_auc": objective, "val/min_auc": min_auc}


def test_tune_value_is_the_best_epoch_penalised_by_its_violation():
    best = BestSoFar(cfg_with("min_auc >= 0.7", **{"train.objective": "overall_auc"}))
    out = [best(_epoch(*e)) for e in [(0.80, 0.72), (0.90, 0.65), (0.85, 0.75), (0.95, 0.70)]]
    # epoch 2 is the best so far by the objective but 0.05 short: 0.9 - 10 * 0.05
    assert [o[TUNE_METRIC] for o in out] == pytest.approx([0.80, 0.40, 0.40, 0.95])
    assert [o[VIOLATION_KEY] for o in out] == pytest.approx([0.0, 0.05, 0.0, 0.0])
    heavy = BestSoFar(cfg_with("min_auc >= 0.7", **{"search.constraint_penalty": 100.0}))
    assert heavy({"objective": 0.8, "val/min_auc": 0.69})[TUNE_METRIC] == pytest.approx(-0.2)


def test_tune_value_for_a_minimised_objective_moves_up():
    best = BestSoFar(cfg_with("min_auc >= 0.7", **{"train.objective": "auc_gap"}))
    assert best({"objective": 0.1, "val/min_auc": 0.6})[TUNE_METRIC] == pytest.approx(1.1)
    assert best({"objective": 0.2, "val/min_auc": 0.8})[TUNE_METRIC] == pytest.approx(1.1)  # not the best epoch
    assert best({"objective": 0.05, "val/min_auc": 0.8})[TUNE_METRIC] == pytest.approx(0.05)


def test_relative_bounds_and_undefined_metrics_in_the_tune_value():
    relative = BestSoFar(cfg_with("auc_gap <= full"))  # the baseline's value is unknown in the trial
    out = relative({"objective": 0.8, "val/auc_gap": 0.5})
    assert out[TUNE_METRIC] == 0.8 and VIOLATION_KEY not in out
    mixed = BestSoFar(cfg_with("auc_gap <= full and min_auc >= 0.5", **{"train.objective": "overall_auc"}))
    assert mixed({"objective": 0.8, "val/auc_gap": 0.5, "val/min_auc": 0.4})[TUNE_METRIC] == pytest.approx(-0.2)
    undefined = BestSoFar(cfg_with("min_auc >= 0.5", **{"train.objective": "overall_auc"}))
    assert math.isnan(undefined({"objective": 0.8, "val/min_auc": NAN})[TUNE_METRIC])
    assert math.isnan(penalised(0.8, math.inf, parse_objective("min_auc"), 10.0))
    assert penalised(0.8, 0.0, parse_objective("min_auc"), 10.0) == 0.8
    unconstrained = BestSoFar(load_config(None))
    assert VIOLATION_KEY not in unconstrained({"objective": 0.8})


# --- fairlearn's names -----------------------------------------------------------------------------

def test_fairlearn_names_are_read_as_ours_in_bounds():
    c = parse_constraint("equalized_odds_difference <= 0.1 and worst_group_auc >= full - 0.02 "
                         "and demographic_parity_difference <= linear", ["full", "linear"])
    assert [b.metric for b in c.bounds] == ["eodds_diff", "min_auc", "dp_diff"]
    assert c.bounds[0].text == "eodds_diff <= 0.1"  # canonical in every later message and table
    resolved = c.resolve({"full": {"min_auc": 0.8}, "linear": {"dp_diff": 0.05}})
    assert resolved.violation({"val/eodds_diff": 0.15, "val/min_auc": 0.7, "val/dp_diff": 0.05}, "val/") == \
        pytest.approx(0.05 + 0.08)


def test_a_fairlearn_named_constraint_drives_the_tune_value():
    best = BestSoFar(cfg_with("equal_opportunity_difference <= 0.1", **{"train.objective": "roc_auc_score"}))
    assert best({"objective": 0.8, "val/eop_diff": 0.3})[VIOLATION_KEY] == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="unknown metric 'equalised_odds_diff'.*fairlearn's names"):
        cfg_with("equalised_odds_diff <= 0.1")
