"""fairlearn's vocabulary: its metric names are accepted for ours in objectives (alone and in combinations)
and the docs name fairlearn's metric beside each of ours. fairlearn itself is a test dependency only."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from fairtune_ray.config import ConfigError, load_config
from fairtune_ray.metrics import OBJECTIVES, parse_objective
from fairtune_ray.metrics.names import FAIRLEARN_ALIASES, FAIRLEARN_EQUIVALENTS, canonical_metric

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("alias, ours", [
    ("equalized_odds_difference", "eodds_diff"), ("demographic_parity_difference", "dp_diff"),
    ("equal_opportunity_difference", "eop_diff"), ("true_positive_rate_difference", "eop_diff"),
    ("roc_auc_score_group_min", "min_auc"), ("worst_group_auc", "min_auc"),
    ("accuracy_score_group_min", "min_acc"), ("accuracy_score_difference", "acc_gap"),
    ("log_loss_group_max", "max_group_loss"), ("roc_auc_score", "overall_auc"),
])
def test_a_fairlearn_name_is_our_objective(alias, ours):
    assert parse_objective(alias) is OBJECTIVES[ours]
    assert parse_objective(f"{OBJECTIVES[ours].mode}: {alias}") is OBJECTIVES[ours]
    assert canonical_metric(alias) == ours and canonical_metric(ours) == ours


def test_every_alias_names_a_registered_objective_and_no_alias_shadows_ours():
    assert set(FAIRLEARN_ALIASES.values()) <= set(OBJECTIVES)
    assert not set(FAIRLEARN_ALIASES) & set(OBJECTIVES)


def test_aliases_in_combinations_become_our_names():
    obj = parse_objective("min_auc - 0.5*equalized_odds_difference")
    assert obj.terms == {"min_auc": 1.0, "eodds_diff": -0.5} and obj.mode == "max"
    assert obj.name == "min_auc - 0.5*eodds_diff"
    assert obj.value({"val/min_auc": 0.8, "val/eodds_diff": 0.2}, prefix="val/") == pytest.approx(0.7)
    same = parse_objective("worst_group_auc - 0.5 * eodds_diff")
    assert same == obj
    both = parse_objective("min: demographic_parity_difference + equalized_odds_difference")
    assert both.terms == {"dp_diff": 1.0, "eodds_diff": 1.0} and both.mode == "min"
    assert parse_objective("eodds_diff + equalized_odds_difference").terms == {"eodds_diff": 2.0}


def test_alias_directions_are_checked_like_ours():
    with pytest.raises(ValueError, match=r"mixes a maximised term \(min_auc\) with a minimised term \(dp_diff\)"):
        parse_objective("worst_group_auc + demographic_parity_difference")
    with pytest.raises(ValueError, match="asks to be maximised"):
        parse_objective("max: equalized_odds_difference")


def test_unknown_names_list_fairlearns_too():
    with pytest.raises(ValueError, match="unknown metric 'equalised_odds'.*equalized_odds_difference = eodds_diff"):
        parse_objective("min_auc - equalised_odds")


def test_config_accepts_a_fairlearn_objective():
    cfg = load_config(None, overrides={"train.objective": "min_auc - 0.5*equalized_odds_difference"})
    assert parse_objective(cfg.train.objective).terms == {"min_auc": 1.0, "eodds_diff": -0.5}
    with pytest.raises(ConfigError):
        load_config(None, overrides={"train.objective": "equalized_odds_ratio"})  # a ratio: not ours


def test_the_metric_docs_name_fairlearns_metric_beside_ours():
    design = (ROOT / "docs" / "design.md").read_text()
    table = design[design.index("### Objectives and metrics"):design.index("**Intervals**")]
    for ours, theirs in FAIRLEARN_EQUIVALENTS.items():
        name = re.match(r"(?:mf\()?([a-z_]+)", theirs).group(1)
        row = next((line for line in table.splitlines() if f"`{ours}`" in line and line.startswith("|")), "")
        assert name in row, f"docs/design.md metrics table: no fairlearn name ({name}) in the row of {ours}"


def test_the_package_never_imports_fairlearn():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "fairtune_ray").rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+fairlearn\b", p.read_text(), re.M)]
    assert not offenders, f"fairlearn is a test dependency only: {offenders}"
