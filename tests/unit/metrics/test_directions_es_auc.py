"""Combined objectives take their direction from their terms (issue 15 item 4); ES-AUC (item 7)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fairtune_ray.metrics import (
    OBJECTIVES,
    OVERALL_METRICS,
    UndefinedGroupMetricWarning,
    bootstrap_intervals,
    compute_metrics,
    paired_differences,
    parse_objective,
)
from fairtune_ray.metrics.across_groups import equity_scaled_auc
from fairtune_ray.metrics.subgroup import _compute
from fairtune_ray.search.results import RESULT_COLUMNS, TABLE_METRICS

NAMES = {0: "light", 1: "mid", 2: "dark"}


def _data(n: int = 1200, seed: int = 0):
    rng = np.random.default_rng(seed)
    g = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    y = rng.integers(0, 2, n)
    s = np.clip(0.35 + np.array([0.30, 0.22, 0.10])[g] * y + rng.normal(0, 0.2, n), 0.01, 0.99)
    return y, s, g


def _es_auc_direct(y, s, g) -> float:
    overall = roc_auc_score(y, s)
    aucs = [roc_auc_score(y[g == c], s[g == c]) for c in np.unique(g) if len(np.unique(y[g == c])) == 2]
    return overall / (1 + sum(abs(a - overall) for a in aucs))


# --------------------------------------------------------------------------- ES-AUC


def test_es_auc_matches_a_direct_sklearn_computation():
    y, s, g = _data()
    m = compute_metrics(y, s, g, NAMES)
    assert "es_auc" in OVERALL_METRICS
    assert m["es_auc"] == pytest.approx(_es_auc_direct(y, s, g), abs=1e-12)
    assert m["es_auc"] < m["overall_auc"]  # the groups differ, so equity scaling lowers it
    # only the work ES-AUC needs (fast numpy AUC) gives the same value
    fast = _compute(y, s, g, NAMES, 0.5, True, needed=["es_auc"], fast=True)
    assert fast["es_auc"] == pytest.approx(m["es_auc"], abs=1e-12)
    assert "min_acc" not in fast and "group/light/acc" not in fast


def test_es_auc_skips_undefined_groups_and_equals_auc_when_groups_agree():
    y, s, g = _data()
    g = g.copy()
    g[:40] = 3  # a fourth group ...
    y = y.copy()
    y[:40] = 0  # ... without positives: its AUC is undefined and left out
    with pytest.warns(UndefinedGroupMetricWarning):
        m = compute_metrics(y, s, g, {**NAMES, 3: "tiny"})
    assert math.isnan(m["group/tiny/auc"])
    assert m["es_auc"] == pytest.approx(_es_auc_direct(y, s, g), abs=1e-12)
    assert equity_scaled_auc(0.8, [0.8, 0.8]) == pytest.approx(0.8)
    assert equity_scaled_auc(0.8, [0.9, 0.7]) == pytest.approx(0.8 / 1.2)
    assert math.isnan(equity_scaled_auc(0.8, [float("nan")]))  # no defined group: not the overall AUC
    assert math.isnan(equity_scaled_auc(float("nan"), [0.7]))


def test_es_auc_bootstrap_interval_contains_the_point():
    y, s, g = _data()
    iv = bootstrap_intervals(y, [s, np.clip(s + 0.02, 0, 1)], g, ["es_auc", "overall_auc"], n_boot=150, seed=1,
                             group_names=NAMES)["es_auc"]
    assert iv["lo"] <= iv["point"] <= iv["hi"] and iv["n_valid"] == 150 and iv["std"] > 0


def test_es_auc_paired_difference_has_the_max_direction():
    y, s, g = _data(4000)
    fairer = s + 0.2 * y * (g == 2)  # the weakest group catches up: ES-AUC rises
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedGroupMetricWarning)
        d = paired_differences(y, fairer, s, g, ["es_auc"], n_boot=100, seed=0, group_names=NAMES)["es_auc"]
    direct = _es_auc_direct(y, fairer, g) - _es_auc_direct(y, s, g)
    assert d.diff == pytest.approx(direct, abs=1e-9) and d.lo > 0 and d.verdict == "better"


def test_every_table_metric_is_a_registered_objective_with_a_column():
    assert "es_auc" in TABLE_METRICS
    columns = {k for k, _ in RESULT_COLUMNS}
    for m in TABLE_METRICS:
        assert m in OBJECTIVES and m in columns
    y, s, g = _data(400)
    assert set(bootstrap_intervals(y, s, g, list(TABLE_METRICS), n_boot=5, group_names=NAMES)) == set(TABLE_METRICS)


# --------------------------------------------------------------------------- objective directions


def test_es_auc_is_a_maximised_objective():
    obj = parse_objective("es_auc")
    assert obj is OBJECTIVES["es_auc"] and obj.mode == "max" and obj.terms == {"es_auc": 1.0}
    combo = parse_objective("es_auc - 0.5*eodds_diff")
    assert combo.mode == "max" and combo.terms == {"es_auc": 1.0, "eodds_diff": -0.5}


@pytest.mark.parametrize("text, mode", [
    ("auc_gap + eodds_diff", "min"),
    ("2*auc_gap", "min"),
    ("-min_auc + auc_gap", "min"),
    ("min_auc - 0.5*auc_gap", "max"),
    ("-auc_gap - eodds_diff", "max"),
    ("0.5*overall_auc + 0.5*min_auc", "max"),
])
def test_combination_mode_is_inferred_from_its_terms(text, mode):
    obj = parse_objective(text)
    assert obj.mode == mode
    assert parse_objective(obj.name).mode == mode  # the canonical name keeps it
    low, high = 0.1, 0.2
    assert obj.better(low, high) is (mode == "min")


def test_minimised_combination_ranks_fairer_models_first():
    obj = parse_objective("auc_gap + eodds_diff")
    fair, unfair = {"auc_gap": 0.02, "eodds_diff": 0.03}, {"auc_gap": 0.2, "eodds_diff": 0.3}
    assert obj.better(obj.value(fair), obj.value(unfair)) and obj.sign == -1.0


def test_mixed_directions_are_an_error_that_spells_both_rewrites():
    with pytest.raises(ValueError) as exc:
        parse_objective("min_auc + auc_gap")
    msg = str(exc.value)
    assert "maximised term (min_auc)" in msg and "minimised term (auc_gap)" in msg
    assert "to maximise, write 'min_auc - auc_gap'" in msg and "to minimise, write '-min_auc + auc_gap'" in msg
    assert parse_objective("min_auc - auc_gap").mode == "max" and parse_objective("-min_auc + auc_gap").mode == "min"
    with pytest.raises(ValueError, match=r"maximised terms \(-auc_gap, es_auc\)"):
        parse_objective("-min_auc - auc_gap + es_auc")


def test_zero_coefficients_carry_no_direction():
    assert parse_objective("min_auc - 0*auc_gap").mode == "max"
    with pytest.raises(ValueError, match="only zero coefficients"):
        parse_objective("min_auc - min_auc")


def test_an_explicit_mode_must_agree_with_the_terms():
    assert parse_objective("min: auc_gap + eodds_diff").mode == "min"
    assert parse_objective("max: min_auc") is OBJECTIVES["min_auc"]
    assert parse_objective("auc_gap", mode="min") is OBJECTIVES["auc_gap"]
    with pytest.raises(ValueError, match="asks to be maximised.*write 'max: -auc_gap - eodds_diff'"):
        parse_objective("max: auc_gap + eodds_diff")
    with pytest.raises(ValueError, match="write 'min: -min_auc'"):
        parse_objective("min: min_auc")
    with pytest.raises(ValueError, match="asks to be maximised"):
        parse_objective("auc_gap", mode="max")
    with pytest.raises(ValueError, match="mixes"):
        parse_objective("max: min_auc + auc_gap")
    with pytest.raises(ValueError, match="says 'min:'"):
        parse_objective("min: auc_gap", mode="max")
    with pytest.raises(ValueError, match="empty objective"):
        parse_objective("max:")


def test_config_load_rejects_mixed_directions_and_keeps_minimised_combinations():
    from fairtune_ray.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="to maximise, write 'min_auc - auc_gap'"):
        config_from_dict({"train": {"objective": "min_auc + auc_gap"}})
    cfg = config_from_dict({"train": {"objective": "auc_gap + eodds_diff"}})
    assert parse_objective(cfg.train.objective).mode == "min"
