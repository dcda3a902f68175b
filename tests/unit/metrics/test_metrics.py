"""Subgroup metrics, objectives and the stratified bootstrap, checked against scikit-learn."""
from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, roc_auc_score, roc_curve

from fairtune_ray.metrics import (
    OBJECTIVES,
    Objective,
    UndefinedGroupMetricWarning,
    bootstrap_intervals,
    compute_metrics,
    expected_calibration_error,
    list_objectives,
    parse_objective,
    roc_points,
    stratified_indices,
    tpr_at_specificity,
)
from fairtune_ray.metrics.subgroup import _compute

NAMES = {0: "light", 1: "mid", 2: "dark"}


def make_data(n: int = 1500, seed: int = 0, shift=(0.30, 0.25, 0.15)):
    """Three groups of unequal size whose separability differs (dark is hardest)."""
    rng = np.random.default_rng(seed)
    g = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    y = rng.integers(0, 2, n)
    s = np.clip(0.35 + np.asarray(shift)[g] * y + rng.normal(0, 0.2, n), 0.01, 0.99)
    return y, s, g


def sk_group(y, s, g, code, thr=0.5):
    """Independent per-group reference values from scikit-learn."""
    m = g == code
    yy, ss = y[m], s[m]
    pred = (ss >= thr).astype(int)
    tn, fp, fn, tp = confusion_matrix(yy, pred, labels=[0, 1]).ravel()
    return {
        "auc": roc_auc_score(yy, ss),
        "acc": accuracy_score(yy, pred),
        "tpr": tp / (tp + fn),
        "fnr": fn / (tp + fn),
        "fpr": fp / (fp + tn),
        "pos_rate": pred.mean(),
        "bce": log_loss(yy, ss, labels=[0, 1]),
        "n": m.sum(),
        "prevalence": yy.mean(),
    }


# --------------------------------------------------------------------------- compute_metrics


def test_group_and_overall_metrics_match_sklearn():
    y, s, g = make_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the all-defined path must be warning-free
        m = compute_metrics(y, s, g, NAMES)
    ref = {NAMES[c]: sk_group(y, s, g, c) for c in range(3)}
    for code, name in NAMES.items():
        for f, v in ref[name].items():
            assert m[f"group/{name}/{f}"] == pytest.approx(v, rel=1e-6, abs=1e-9), (name, f)
        assert m[f"group/{name}/ece"] == pytest.approx(expected_calibration_error(y[g == code], s[g == code]))

    assert m["overall_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["overall_acc"] == pytest.approx(accuracy_score(y, (s >= 0.5).astype(int)))
    assert m["overall_bce"] == pytest.approx(log_loss(y, s), rel=1e-6)
    assert m["overall_ece"] == pytest.approx(expected_calibration_error(y, s))

    col = lambda f: [ref[n][f] for n in ref]  # noqa: E731
    spread = lambda f: max(col(f)) - min(col(f))  # noqa: E731
    assert m["min_auc"] == pytest.approx(min(col("auc")))
    assert m["max_auc"] == pytest.approx(max(col("auc")))
    assert m["auc_gap"] == pytest.approx(spread("auc"))
    assert m["min_acc"] == pytest.approx(min(col("acc")))
    assert m["acc_gap"] == pytest.approx(spread("acc"))
    assert m["max_group_loss"] == pytest.approx(max(col("bce")), rel=1e-6)
    assert m["dp_diff"] == pytest.approx(spread("pos_rate"))
    assert m["eop_diff"] == pytest.approx(spread("tpr"))
    assert m["eodds_diff"] == pytest.approx(max(spread("tpr"), spread("fpr")))
    assert m["underdiag_gap"] == pytest.approx(spread("fnr"))
    assert m["n_groups_auc_undefined"] == 0
    # the synthetic dark group is the hardest one
    assert m["min_auc"] == m["group/dark/auc"]


def test_threshold_and_no_finding_underdiagnosis():
    y, s, g = make_data(seed=1)
    m = compute_metrics(y, s, g, NAMES, threshold=0.6, positive_is_disease=False)
    ref = [sk_group(y, s, g, c, thr=0.6) for c in range(3)]
    fprs = [r["fpr"] for r in ref]
    # label 1 = healthy: underdiagnosis = sick (0) called healthy (1) = FPR
    assert m["underdiag_gap"] == pytest.approx(max(fprs) - min(fprs))
    assert m["group/mid/acc"] == pytest.approx(ref[1]["acc"])


def test_unnamed_groups_use_codes():
    y, s, g = make_data(n=300)
    m = compute_metrics(y, s, g + 5)
    assert {"group/5/auc", "group/6/auc", "group/7/auc"} <= set(m)


def test_bce_is_finite_for_confident_mistakes():
    m = compute_metrics([0, 1, 1], [1.0, 0.0, 1.0], [0, 0, 0])
    assert np.isfinite(m["overall_bce"]) and m["overall_bce"] > 5
    assert m["overall_bce"] == pytest.approx(m["group/0/bce"])


def test_ece_hand_example():
    y = np.array([0, 0, 1, 1, 1, 1])
    s = np.array([0.05, 0.15, 0.15, 0.85, 0.95, 1.0])
    # bins: [0,.1): |0-.05|*1; [.1,.2): |.5-.15|*2; [.8,.9): |1-.85|*1; [.9,1]: |1-.975|*2
    expected = (0.05 + 2 * 0.35 + 0.15 + 2 * 0.025) / 6
    assert expected_calibration_error(y, s) == pytest.approx(expected)
    m = compute_metrics(y, s, np.zeros(6, dtype=int))
    assert m["overall_ece"] == pytest.approx(expected)
    assert m["group/0/ece"] == pytest.approx(expected)


def test_tpr_at_spec80_interpolates_and_handles_vertical_segments():
    # ROC: (0,.25) -> tie block -> (.4,.5) -> (.4,1) -> (1,1); at FPR .2: halfway -> .375
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.5, 0.5, 0.1, 0.1, 0.1, 0.9, 0.5, 0.2, 0.2])
    assert tpr_at_specificity(y, s) == pytest.approx(0.375)
    assert tpr_at_specificity(y, s, fast=True) == pytest.approx(0.375)
    # vertical segment exactly at FPR .2 (from .5 up to .75): highest reachable TPR
    y2 = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    s2 = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.6, 0.45, 0.35])
    assert tpr_at_specificity(y2, s2) == pytest.approx(0.75)
    assert tpr_at_specificity(y2, s2, fast=True) == pytest.approx(0.75)
    m = compute_metrics(y2, s2, np.zeros(9, dtype=int))
    assert m["group/0/tpr_at_spec80"] == pytest.approx(0.75)


def test_single_class_group_is_nan_with_warning_and_others_still_right():
    y, s, g = make_data(n=900, seed=2)
    g = g.copy()
    y = y.copy()
    # group 3 ("solo"): negatives only; group 4 ("allpos"): positives only
    solo = np.arange(20)
    allpos = np.arange(20, 35)
    g[solo], y[solo] = 3, 0
    g[allpos], y[allpos] = 4, 1
    names = {**NAMES, 3: "solo", 4: "allpos"}
    with pytest.warns(UndefinedGroupMetricWarning) as rec:
        m = compute_metrics(y, s, g, names)
    msgs = " ".join(str(w.message) for w in rec)
    assert "solo" in msgs and "allpos" in msgs

    for f in ("auc", "tpr", "fnr", "tpr_at_spec80"):
        assert math.isnan(m[f"group/solo/{f}"]), f
    for f in ("auc", "fpr", "tpr_at_spec80"):
        assert math.isnan(m[f"group/allpos/{f}"]), f
    pred = (s[solo] >= 0.5).astype(int)
    assert m["group/solo/acc"] == pytest.approx(accuracy_score(y[solo], pred))
    assert m["group/solo/fpr"] == pytest.approx(pred.mean())
    assert m["group/solo/n"] == 20 and m["group/solo/prevalence"] == 0.0
    assert m["group/allpos/tpr"] == pytest.approx((s[allpos] >= 0.5).mean())
    assert m["group/solo/bce"] == pytest.approx(log_loss(y[solo], s[solo], labels=[0, 1]))

    defined = [sk_group(y, s, g, c) for c in range(3)]
    assert m["min_auc"] == pytest.approx(min(r["auc"] for r in defined))
    assert m["auc_gap"] == pytest.approx(max(r["auc"] for r in defined) - min(r["auc"] for r in defined))
    assert m["n_groups_auc_undefined"] == 2
    tprs = [r["tpr"] for r in defined] + [m["group/allpos/tpr"]]
    assert m["eop_diff"] == pytest.approx(max(tprs) - min(tprs))
    # accuracy aggregates include every group (accuracy is defined for all)
    assert m["min_acc"] == pytest.approx(min([r["acc"] for r in defined] + [m["group/solo/acc"], m["group/allpos/acc"]]))
    assert not math.isnan(m["overall_auc"])


def test_all_groups_undefined_gives_nan_aggregates():
    y = np.array([0, 0, 1, 1])
    g = np.array([0, 0, 1, 1])
    with pytest.warns(UndefinedGroupMetricWarning):
        m = compute_metrics(y, np.array([0.1, 0.6, 0.4, 0.9]), g)
    assert math.isnan(m["min_auc"]) and math.isnan(m["auc_gap"])
    assert m["overall_auc"] == pytest.approx(0.75)  # 3 of 4 pos/neg pairs ordered
    assert m["n_groups_auc_undefined"] == 2


def test_fast_path_matches_sklearn_path_with_ties():
    y, s, g = make_data(n=800, seed=3)
    s = np.round(s, 1)  # many ties
    full = compute_metrics(y, s, g, NAMES)
    fast = _compute(y, s, g, NAMES, 0.5, True, needed=None, fast=True)
    assert full.keys() == fast.keys()
    for k in full:
        assert fast[k] == pytest.approx(full[k], abs=1e-12), k


def test_input_validation():
    with pytest.raises(ValueError, match="length mismatch"):
        compute_metrics([0, 1], [0.2], [0, 0])
    with pytest.raises(ValueError, match="only 0 and 1"):
        compute_metrics([0, 2], [0.2, 0.3], [0, 0])
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics([0, 1], [0.2, float("nan")], [0, 0])


def test_roc_points_per_group():
    y, s, g = make_data(n=400)
    pts = roc_points(y, s, g, NAMES, include_overall=True)
    assert set(pts) == {"overall", "light", "mid", "dark"}
    fpr, tpr, _ = roc_curve(y[g == 2], s[g == 2])
    np.testing.assert_allclose(pts["dark"][0], fpr)
    np.testing.assert_allclose(pts["dark"][1], tpr)
    g2 = g.copy()
    g2[:5], y2 = 9, y.copy()
    y2[:5] = 1
    with pytest.warns(UndefinedGroupMetricWarning, match="9"):
        pts = roc_points(y2, s, g2)
    assert "9" not in pts and "0" in pts


# --------------------------------------------------------------------------- objectives


def test_registered_objectives_and_directions():
    expected = {
        "min_auc": "max", "auc_gap": "min", "min_acc": "max", "acc_gap": "min", "overall_auc": "max",
        "max_group_loss": "min", "eodds_diff": "min", "eop_diff": "min", "dp_diff": "min", "underdiag_gap": "min",
    }
    for name, mode in expected.items():
        obj = parse_objective(name)
        assert obj.mode == mode and obj.terms == {name: 1.0} and obj.name == name
        assert name in list_objectives()
    assert parse_objective("  auc_gap ") is OBJECTIVES["auc_gap"]


@pytest.mark.parametrize(
    "text, terms",
    [
        ("min_auc - 0.5*auc_gap", {"min_auc": 1.0, "auc_gap": -0.5}),
        ("min_auc-2 * auc_gap", {"min_auc": 1.0, "auc_gap": -2.0}),
        ("0.5*overall_auc + 0.5*min_auc", {"overall_auc": 0.5, "min_auc": 0.5}),
        ("min_auc - auc_gap*1e-1", {"min_auc": 1.0, "auc_gap": -0.1}),
        ("-eodds_diff", {"eodds_diff": -1.0}),
    ],
)
def test_parse_combinations(text, terms):
    obj = parse_objective(text)
    assert obj.mode == "max"
    assert obj.terms.keys() == terms.keys()
    for k, v in terms.items():
        assert obj.terms[k] == pytest.approx(v)
    # the canonical name parses back to the same objective
    assert parse_objective(obj.name).terms == obj.terms


def test_objective_value_prefix_and_better():
    obj = parse_objective("min_auc - 0.5*auc_gap")
    metrics = {"val/min_auc": 0.8, "val/auc_gap": 0.1}
    assert obj.value(metrics, prefix="val/") == pytest.approx(0.75)
    with pytest.raises(KeyError, match="val/min_auc"):
        obj.value({"min_auc": 0.8}, prefix="val/")
    assert math.isnan(obj.value({"min_auc": float("nan"), "auc_gap": 0.1}))
    assert obj.better(0.8, 0.7) and not obj.better(0.7, 0.8)
    gap = parse_objective("auc_gap")
    assert gap.better(0.01, 0.2) and not gap.better(0.2, 0.01)
    nan = float("nan")
    assert gap.better(0.5, nan) and not gap.better(nan, 0.5) and not gap.better(nan, nan)
    assert obj.sign == 1.0 and gap.sign == -1.0


@pytest.mark.parametrize("text, token", [("min_acu", "min_acu"), ("min_auc - 0.5*auc_gapp", "auc_gapp")])
def test_unknown_metric_error_names_token_and_known(text, token):
    with pytest.raises(ValueError) as exc:
        parse_objective(text)
    msg = str(exc.value)
    assert f"'{token}'" in msg and "min_auc" in msg and "underdiag_gap" in msg


@pytest.mark.parametrize("text", ["", "min_auc +", "min_auc auc_gap", "0.5*", "min_auc ** 2", "2*min_auc*3"])
def test_malformed_objectives(text):
    with pytest.raises(ValueError):
        parse_objective(text)


def test_objective_validation():
    with pytest.raises(ValueError):
        Objective("x", {"min_auc": 1.0}, "up")  # type: ignore[arg-type]


def test_config_rejects_unknown_objective():
    from fairtune_ray.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="min_acu"):
        config_from_dict({"train": {"objective": "min_acu"}})
    assert config_from_dict({"train": {"objective": "min_auc - 0.5*auc_gap"}}).train.objective


# --------------------------------------------------------------------------- bootstrap

BOOT_METRICS = ["min_auc", "auc_gap", "overall_auc", "eodds_diff", "underdiag_gap", "group/dark/auc"]


def test_bootstrap_interval_contains_point_and_is_deterministic():
    y, s, g = make_data(n=1200, seed=4)
    a = bootstrap_intervals(y, s, g, ["min_auc", "overall_auc", "group/light/acc"], n_boot=200, seed=7, group_names=NAMES)
    b = bootstrap_intervals(y, s, g, ["min_auc", "overall_auc", "group/light/acc"], n_boot=200, seed=7, group_names=NAMES)
    c = bootstrap_intervals(y, s, g, ["min_auc", "overall_auc", "group/light/acc"], n_boot=200, seed=8, group_names=NAMES)
    assert a == b
    assert a["overall_auc"]["lo"] != c["overall_auc"]["lo"]
    m = compute_metrics(y, s, g, NAMES)
    for k, r in a.items():
        assert r["point"] == pytest.approx(m[k])
        assert r["lo"] <= r["point"] <= r["hi"], k
        assert r["std"] > 0
        assert r["lo"] < r["hi"]


def test_bootstrap_narrows_with_more_samples():
    small = bootstrap_intervals(*make_data(n=300, seed=5), ["overall_auc", "min_auc"], n_boot=150)
    large = bootstrap_intervals(*make_data(n=3000, seed=5), ["overall_auc", "min_auc"], n_boot=150)
    for k in ("overall_auc", "min_auc"):
        assert large[k]["hi"] - large[k]["lo"] < 0.6 * (small[k]["hi"] - small[k]["lo"]), k
        assert large[k]["std"] < small[k]["std"]


def test_stratified_resampling_keeps_group_sizes():
    _, _, g = make_data(n=500, seed=6)
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = stratified_indices(g, rng)
        assert idx.shape == g.shape
        np.testing.assert_array_equal(g[idx], g)  # each position redrawn from its own group
        assert len(np.unique(idx)) < len(idx)  # with replacement
    # a metric depending only on group sizes does not move across replicates
    y, s, g = make_data(n=500, seed=6)
    r = bootstrap_intervals(y, s, g, ["group/dark/n", "group/light/n"], n_boot=50, group_names=NAMES)
    for k, name in (("group/dark/n", 2), ("group/light/n", 0)):
        assert r[k]["lo"] == r[k]["hi"] == r[k]["point"] == (g == name).sum()
        assert r[k]["std"] == 0.0


def test_bootstrap_multi_seed_average():
    y, s, g = make_data(n=800, seed=7)
    rng = np.random.default_rng(1)
    s2 = np.clip(s + rng.normal(0, 0.1, s.size), 0, 1)
    multi = bootstrap_intervals(y, [s, s2], g, ["min_auc", "overall_auc"], n_boot=100, seed=3)
    for k in ("min_auc", "overall_auc"):
        expected = (compute_metrics(y, s, g)[k] + compute_metrics(y, s2, g)[k]) / 2
        assert multi[k]["point"] == pytest.approx(expected)
        assert multi[k]["lo"] <= multi[k]["point"] <= multi[k]["hi"]
    # the same resampled indices are applied to every seed: duplicating one seed changes nothing
    single = bootstrap_intervals(y, s, g, ["min_auc"], n_boot=100, seed=3)
    dup = bootstrap_intervals(y, [s, s], g, ["min_auc"], n_boot=100, seed=3)
    for f in ("point", "lo", "hi", "std"):
        assert dup["min_auc"][f] == pytest.approx(single["min_auc"][f])
    stacked = bootstrap_intervals(y, np.stack([s, s2]), g, ["min_auc", "overall_auc"], n_boot=100, seed=3)
    assert stacked == multi


def test_bootstrap_undefined_group_warns_once_and_ignores_nan():
    y, s, g = make_data(n=600, seed=8)
    y, g = y.copy(), g.copy()
    g[:12], y[:12] = 3, 0
    with pytest.warns(UndefinedGroupMetricWarning) as rec:
        r = bootstrap_intervals(y, s, g, ["min_auc", "group/3/auc", "group/3/acc"], n_boot=60)
    assert len([w for w in rec if issubclass(w.category, UndefinedGroupMetricWarning)]) == 1
    assert "'3'" in str(rec[0].message)
    assert math.isnan(r["group/3/auc"]["point"]) and math.isnan(r["group/3/auc"]["lo"])
    assert r["group/3/auc"]["n_valid"] == 0
    assert np.isfinite(r["min_auc"]["lo"]) and np.isfinite(r["group/3/acc"]["hi"])


def test_bootstrap_rejects_unknown_metric():
    y, s, g = make_data(n=200)
    with pytest.raises(ValueError, match="group/purple/auc"):
        bootstrap_intervals(y, s, g, ["group/purple/auc"], n_boot=10, group_names=NAMES)
    with pytest.raises(ValueError, match="same samples"):
        bootstrap_intervals(y, [s, s[:-1]], g, ["min_auc"], n_boot=10)


def test_bootstrap_is_fast():
    y, s, g = make_data(n=2000, seed=9)
    t0 = time.perf_counter()
    r = bootstrap_intervals(y, s, g, BOOT_METRICS, n_boot=500, group_names=NAMES)
    elapsed = time.perf_counter() - t0
    assert set(r) == set(BOOT_METRICS)
    assert elapsed < 8.0, f"500 replicates took {elapsed:.1f}s"


# --------------------------------------------------------------------------- group x label strata, paired differences
def _small_minority(seed: int = 0):
    """Majority of 400 (AUC ~0.96); a minority of 20 with only 2 positives (AUC 0.5)."""
    rng = np.random.default_rng(seed)
    y_maj = (rng.random(400) < 0.5).astype(int)
    s_maj = np.clip(y_maj * 0.6 + rng.normal(0.2, 0.18, 400), 0, 1)
    y_min = np.array([1, 1] + [0] * 18)
    s_min = np.array([0.2, 0.8] + list(np.linspace(0.1, 0.9, 18)))
    y, s = np.concatenate([y_maj, y_min]), np.concatenate([s_maj, s_min])
    g = np.array([0] * 400 + [1] * 20)
    return y, s, g


def test_stratified_resampling_keeps_each_groups_class_counts():
    y, _, g = _small_minority()
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = stratified_indices(g, rng, labels=y)
        np.testing.assert_array_equal(g[idx], g)
        np.testing.assert_array_equal(y[idx], y)  # each position redrawn from its own group x label cell


def test_worst_group_interval_stays_on_the_small_group():
    y, s, g = _small_minority()
    names = {0: "majority", 1: "minority"}
    point = compute_metrics(y, s, g, names)
    assert point["group/majority/auc"] > 0.9 and point["min_auc"] == point["group/minority/auc"]
    r = bootstrap_intervals(y, s, g, ["min_auc", "group/minority/auc"], n_boot=300, seed=1, group_names=names)
    assert r["group/minority/auc"]["n_valid"] == 300  # defined in every replicate
    # before: the upper bound was the majority's AUC (replicates without minority positives)
    assert r["min_auc"]["hi"] < point["group/majority/auc"] - 0.05
    assert r["min_auc"]["hi"] <= r["group/minority/auc"]["hi"] + 1e-12


def test_paired_difference_equals_a_direct_computation_on_the_same_indices():
    from fairtune_ray.metrics import paired_differences

    y, s, g = make_data(n=600, seed=11)
    s2 = np.clip(s + np.random.default_rng(3).normal(0, 0.15, s.size), 0, 1)
    got = paired_differences(y, s, s2, g, ["min_auc", "auc_gap", "overall_auc"], n_boot=80, seed=5, group_names=NAMES)
    rng = np.random.default_rng(5)
    diffs = []
    for _ in range(80):  # the same draws, in the same order, as the bootstrap
        idx = stratified_indices(g, rng, labels=y)
        a, b = compute_metrics(y[idx], s[idx], g[idx], NAMES), compute_metrics(y[idx], s2[idx], g[idx], NAMES)
        diffs.append([a[m] - b[m] for m in ("min_auc", "auc_gap", "overall_auc")])
    diffs = np.array(diffs)
    full_a, full_b = compute_metrics(y, s, g, NAMES), compute_metrics(y, s2, g, NAMES)
    for j, m in enumerate(("min_auc", "auc_gap", "overall_auc")):
        lo, hi = np.percentile(diffs[:, j], [2.5, 97.5])
        assert got[m].diff == pytest.approx(full_a[m] - full_b[m], abs=1e-9)
        assert (got[m].lo, got[m].hi) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    assert got["overall_auc"].verdict == "better"  # adding noise to the scores only hurts AUC


def test_verdict_follows_the_interval_and_the_metric_direction():
    from fairtune_ray.metrics.paired import verdict

    assert verdict(0.01, 0.2, True) == "better" and verdict(0.01, 0.2, False) == "worse"
    assert verdict(-0.2, -0.01, True) == "worse" and verdict(-0.2, -0.01, False) == "better"
    assert verdict(-0.1, 0.1, True) == "no detectable difference"
    assert verdict(float("nan"), 0.1, True) == "undefined"
