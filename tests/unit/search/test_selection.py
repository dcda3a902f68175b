"""MEDFAIR-style model selection across trials: best, pareto, dto."""
from __future__ import annotations

import math

import pytest

from fairtune_ray.metrics import compute_metrics, parse_objective
from fairtune_ray.search.selection import group_auc_matrix, pareto_front, select_trial

NAN = float("nan")


def trial(tid: str, aucs: dict[str, float], prefix: str = "", **extra: float) -> dict:
    """A trial whose flat metrics hold per-group AUCs plus the aggregates derived from them."""
    finite = [v for v in aucs.values() if not math.isnan(v)]
    metrics = {f"{prefix}group/{g}/auc": v for g, v in aucs.items()}
    metrics[f"{prefix}min_auc"] = min(finite) if finite else NAN
    metrics[f"{prefix}auc_gap"] = max(finite) - min(finite) if finite else NAN
    metrics.update({prefix + k: v for k, v in extra.items()})
    return {"trial_id": tid, "metrics": metrics, "config": {"lr": 1e-4}}


def ids(trials):
    return [t["trial_id"] for t in trials]


def test_best_by_direction_and_prefix():
    ts = [
        trial("a", {"light": 0.90, "dark": 0.70}, prefix="val/", overall_auc=0.88),
        trial("b", {"light": 0.86, "dark": 0.80}, prefix="val/", overall_auc=0.85),
        trial("c", {"light": 0.95, "dark": 0.60}, prefix="val/", overall_auc=0.91),
    ]
    assert select_trial(ts, "best", parse_objective("min_auc"), prefix="val/")["trial_id"] == "b"
    assert select_trial(ts, "best", parse_objective("overall_auc"), prefix="val/")["trial_id"] == "c"
    assert select_trial(ts, "best", parse_objective("auc_gap"), prefix="val/")["trial_id"] == "b"
    # 0.9 - 2*0.2 = 0.5; 0.86 - 2*0.06 = 0.74 ... combined objective agrees with min_auc here
    assert select_trial(ts, "best", parse_objective("overall_auc - 2*auc_gap"), prefix="val/")["trial_id"] == "b"
    assert select_trial(ts, "best", parse_objective("min_auc"), prefix="val/") is ts[1]


def test_best_nan_and_missing_lose():
    ts = [
        trial("nan", {"light": NAN, "dark": NAN}),
        {"trial_id": "failed", "metrics": {}},
        trial("ok", {"light": 0.7, "dark": 0.6}),
        trial("worse", {"light": 0.7, "dark": 0.5}),
    ]
    assert select_trial(ts, "best", parse_objective("min_auc"))["trial_id"] == "ok"
    with pytest.raises(ValueError, match="no trial has a defined value"):
        select_trial(ts[:2], "best", parse_objective("min_auc"))


def test_best_ties_go_to_earlier_trial():
    ts = [trial("first", {"a": 0.8, "b": 0.7}), trial("second", {"a": 0.9, "b": 0.7})]
    assert select_trial(ts, "best", parse_objective("min_auc"))["trial_id"] == "first"


def test_pareto_front():
    ts = [
        trial("t1", {"light": 0.90, "dark": 0.60}),
        trial("t2", {"light": 0.70, "dark": 0.80}),
        trial("t3", {"light": 0.80, "dark": 0.70}),
        trial("dominated", {"light": 0.79, "dark": 0.69}),
        trial("dup_t3", {"light": 0.80, "dark": 0.70}),  # equal points do not dominate each other
        trial("weak", {"light": 0.60, "dark": 0.55}),
    ]
    assert pareto_front(ts) == ["t1", "t2", "t3", "dup_t3"]


def test_pareto_uses_weakest_group_of_baseline():
    ts = [
        trial("t1", {"a": 0.90, "b": 0.60}),
        trial("t2", {"a": 0.70, "b": 0.80}),
        trial("dominated", {"a": 0.69, "b": 0.79}),
    ]
    obj = parse_objective("min_auc")
    base_a_weak = {"group/a/auc": 0.65, "group/b/auc": 0.75}
    base_b_weak = {"group/a/auc": 0.85, "group/b/auc": 0.60}
    assert select_trial(ts, "pareto", obj, baseline=base_a_weak)["trial_id"] == "t1"
    assert select_trial(ts, "pareto", obj, baseline=base_b_weak)["trial_id"] == "t2"
    # a baseline given as a whole trial dict works too
    assert select_trial(ts, "pareto", obj, baseline={"trial_id": "full", "metrics": base_a_weak})["trial_id"] == "t1"
    # no baseline: the weakest group overall (mean AUC a = .763, b = .730) is b
    assert select_trial(ts, "pareto", obj)["trial_id"] == "t2"


def test_pareto_picks_from_front_only_and_with_prefix():
    # "dom" ties the best AUC on the baseline's weakest group (a) but is dominated: not eligible
    ts = [
        trial("front", {"a": 0.80, "b": 0.80, "c": 0.80}, prefix="val/"),
        trial("dom", {"a": 0.80, "b": 0.79, "c": 0.80}, prefix="val/"),
        trial("other", {"a": 0.70, "b": 0.90, "c": 0.90}, prefix="val/"),
    ]
    base = {"val/group/a/auc": 0.5, "val/group/b/auc": 0.9, "val/group/c/auc": 0.9}
    assert "dom" not in pareto_front(ts, prefix="val/")
    # the tie on group a between front and dom is resolved within the front
    assert select_trial(ts, "pareto", parse_objective("min_auc"), baseline=base, prefix="val/")["trial_id"] == "front"


def test_dto_picks_closest_to_utopia():
    ts = [
        trial("t1", {"a": 0.90, "b": 0.60}, overall_auc=0.90),  # ratios (1, .75): d = .25
        trial("t2", {"a": 0.85, "b": 0.78}, overall_auc=0.84),  # (.944, .975): d = .061
        trial("t3", {"a": 0.70, "b": 0.80}, overall_auc=0.80),  # (.778, 1): d = .222
    ]
    assert select_trial(ts, "dto", parse_objective("overall_auc"))["trial_id"] == "t2"
    # while best-by-objective would pick t1
    assert select_trial(ts, "best", parse_objective("overall_auc"))["trial_id"] == "t1"
    # dto normalises per group: a large-AUC group does not swamp a small one
    ts2 = [
        trial("x", {"a": 0.99, "b": 0.50}),  # (1, .833): d = .167
        trial("y", {"a": 0.90, "b": 0.60}),  # (.909, 1): d = .091
    ]
    assert select_trial(ts2, "dto", parse_objective("min_auc"))["trial_id"] == "y"


def test_nan_group_auc_handling():
    ts = [
        trial("t1", {"a": 0.9, "b": 0.7, "solo": NAN}),
        trial("t2", {"a": 0.8, "b": 0.8, "solo": NAN}),
        trial("broken", {"a": 0.99, "b": NAN, "solo": NAN}),
    ]
    rows, names, mat = group_auc_matrix(ts)
    assert names == ["a", "b"] and rows == [0, 1] and mat.shape == (2, 2)
    assert "broken" not in pareto_front(ts)
    assert select_trial(ts, "dto", parse_objective("min_auc"))["trial_id"] in {"t1", "t2"}
    obj = parse_objective("min_auc")
    assert select_trial(ts, "pareto", obj, baseline={"group/a/auc": 0.5, "group/b/auc": 0.6})["trial_id"] == "t1"
    # the baseline's own NaN groups are skipped when finding its weakest group
    assert select_trial(ts, "pareto", obj, baseline={"group/a/auc": 0.9, "group/b/auc": 0.6, "group/solo/auc": NAN})["trial_id"] == "t2"


def test_works_on_compute_metrics_output():
    import numpy as np

    rng = np.random.default_rng(0)
    n = 600
    g = rng.integers(0, 2, n)
    y = rng.integers(0, 2, n)
    good = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.15, n), 0, 1)
    bad = np.clip(0.4 + 0.2 * y + rng.normal(0, 0.25, n), 0, 1)
    ts = [
        {"trial_id": "bad", "metrics": {f"val/{k}": v for k, v in compute_metrics(y, bad, g).items()}},
        {"trial_id": "good", "metrics": {f"val/{k}": v for k, v in compute_metrics(y, good, g).items()}},
    ]
    for strategy in ("best", "pareto", "dto"):
        assert select_trial(ts, strategy, parse_objective("min_auc - 0.5*auc_gap"), prefix="val/")["trial_id"] == "good"


def test_errors():
    obj = parse_objective("min_auc")
    with pytest.raises(ValueError, match="empty"):
        select_trial([], "best", obj)
    with pytest.raises(ValueError, match="unknown selection strategy 'worst'"):
        select_trial([trial("a", {"x": 0.5, "y": 0.6})], "worst", obj)
    with pytest.raises(ValueError, match="group/<name>/auc"):
        select_trial([{"trial_id": "a", "metrics": {"min_auc": 0.5}}], "pareto", obj)
    with pytest.raises(ValueError, match="baseline"):
        select_trial([trial("a", {"x": 0.5, "y": 0.6})], "pareto", obj, baseline={"min_auc": 0.3})
    with pytest.raises(ValueError, match="empty"):
        pareto_front([])
