"""fairlearn as the oracle: every cross-group metric of ours against fairlearn's on the same arrays.

Same labels, scores, groups and threshold (a prediction is positive when score >= 0.5) on both sides;
several seeds, 3-4 groups of realistic, unequal sizes and prevalences. Both sides end in scikit-learn's
metrics or exact counts, so agreement is to floating-point noise (``TOL``). Where our definition differs
from fairlearn's the exact relation is tested instead:

- ``equalized_odds_difference(agg="mean")`` is the mean of the TPR and FPR gaps; ours (``eodds_diff``) is
  their max, fairlearn's default ``agg="worst_case"``.
- a group without positives (negatives) has an undefined TPR (FPR): ours is NaN and left out of the gaps;
  fairlearn's ``true_positive_rate`` (``false_positive_rate``) returns 0 there, which enters its gaps.
- ES-AUC has no fairlearn equivalent: it is recomputed from ``MetricFrame(roc_auc_score)``'s by-group
  and overall AUCs.
- BCE: ours clips scores to [1e-7, 1 - 1e-7]; scikit-learn's ``log_loss`` at machine epsilon. Scores are
  kept inside [1e-6, 1 - 1e-6] here, where the two are the same function.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
from fairlearn.metrics import (  # noqa: E402
    MetricFrame,
    accuracy_score_difference,
    accuracy_score_group_min,
    count,
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_negative_rate,
    false_negative_rate_difference,
    false_positive_rate,
    false_positive_rate_difference,
    log_loss_group_max,
    mean_prediction,
    roc_auc_score_group_min,
    selection_rate,
    selection_rate_difference,
    true_positive_rate,
    true_positive_rate_difference,
)
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score  # noqa: E402

from fairtune_ray.metrics import UndefinedGroupMetricWarning, compute_metrics  # noqa: E402
from fairtune_ray.metrics.names import FAIRLEARN_EQUIVALENTS, OVERALL_METRICS  # noqa: E402
from fairtune_ray.metrics.subgroup import _compute  # noqa: E402 - the bootstrap's fast path

TOL = 1e-12
THRESHOLD = 0.5
SEEDS = (0, 1, 2, 3, 4)
NAMES = {0: "light", 1: "medium", 2: "dark", 3: "very_dark"}
SIZES = {3: (900, 300, 80), 4: (1200, 500, 160, 60)}  # realistic imbalance: a small minority group


def _data(seed: int, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, scores and group codes; each group has its own prevalence and separability."""
    rng = np.random.default_rng(seed)
    ys, ss, gs = [], [], []
    for code, n in enumerate(SIZES[n_groups]):
        prevalence = rng.uniform(0.15, 0.5)
        y = (rng.random(n) < prevalence).astype(int)
        y[:2], y[2:4] = 1, 0  # every group keeps both classes
        shift = rng.uniform(0.4, 2.0)  # weaker separation for some groups: unequal AUCs and rates
        logits = rng.normal(0.0, 1.0, n) + shift * (2 * y - 1) + rng.normal(0, 0.5)
        scores = np.clip(1.0 / (1.0 + np.exp(-logits)), 1e-6, 1 - 1e-6)
        scores[5] = THRESHOLD  # a score exactly at the threshold counts as positive on both sides
        ys.append(y), ss.append(scores), gs.append(np.full(n, code))
    return np.concatenate(ys), np.concatenate(ss), np.concatenate(gs)


def _frame(metric, y, values, g) -> MetricFrame:
    return MetricFrame(metrics=metric, y_true=y, y_pred=values, sensitive_features=g)


CASES = [(seed, k) for seed in SEEDS for k in (3, 4)]


@pytest.fixture(params=CASES, ids=[f"seed{s}-{k}groups" for s, k in CASES])
def case(request):
    seed, k = request.param
    y, s, g = _data(seed, k)
    pred = (s >= THRESHOLD).astype(int)
    ours = compute_metrics(y, s, g, group_names=NAMES, threshold=THRESHOLD)
    return y, s, g, pred, ours


def test_auc_aggregates_match_metricframe(case):
    y, s, g, _, ours = case
    auc = _frame(roc_auc_score, y, s, g)
    assert ours["min_auc"] == pytest.approx(auc.group_min(), abs=TOL)
    assert ours["min_auc"] == pytest.approx(roc_auc_score_group_min(y, s, sensitive_features=g), abs=TOL)
    assert ours["max_auc"] == pytest.approx(auc.group_max(), abs=TOL)
    assert ours["auc_gap"] == pytest.approx(auc.difference(), abs=TOL)
    assert ours["overall_auc"] == pytest.approx(auc.overall, abs=TOL)
    for code, name in NAMES.items():
        if code in auc.by_group.index:
            assert ours[f"group/{name}/auc"] == pytest.approx(auc.by_group[code], abs=TOL)


def test_es_auc_from_metricframe_aucs(case):
    """ES-AUC has no fairlearn name: AUC / (1 + sum_g |AUC_g - AUC|) from MetricFrame's AUCs."""
    y, s, g, _, ours = case
    auc = _frame(roc_auc_score, y, s, g)
    expected = auc.overall / (1.0 + np.abs(auc.by_group.to_numpy() - auc.overall).sum())
    assert ours["es_auc"] == pytest.approx(expected, abs=TOL)


def test_fairness_differences_match_fairlearn(case):
    y, _, g, pred, ours = case
    assert ours["dp_diff"] == pytest.approx(demographic_parity_difference(y, pred, sensitive_features=g), abs=TOL)
    assert ours["dp_diff"] == pytest.approx(selection_rate_difference(y, pred, sensitive_features=g), abs=TOL)
    assert ours["eop_diff"] == pytest.approx(equal_opportunity_difference(y, pred, sensitive_features=g), abs=TOL)
    assert ours["eop_diff"] == pytest.approx(true_positive_rate_difference(y, pred, sensitive_features=g), abs=TOL)
    assert ours["eodds_diff"] == pytest.approx(equalized_odds_difference(y, pred, sensitive_features=g), abs=TOL)
    assert ours["eodds_diff"] == pytest.approx(
        equalized_odds_difference(y, pred, sensitive_features=g, agg="worst_case"), abs=TOL)


def test_eodds_mean_aggregation_is_the_mean_of_our_two_gaps(case):
    """fairlearn's agg="mean" averages the TPR and FPR gaps; ours takes their max (agg="worst_case")."""
    y, _, g, pred, ours = case
    fpr = [ours[f"group/{n}/fpr"] for n in NAMES.values() if f"group/{n}/fpr" in ours]
    fpr_gap = max(fpr) - min(fpr)
    assert fpr_gap == pytest.approx(false_positive_rate_difference(y, pred, sensitive_features=g), abs=TOL)
    mean = equalized_odds_difference(y, pred, sensitive_features=g, agg="mean")
    assert mean == pytest.approx((ours["eop_diff"] + fpr_gap) / 2, abs=TOL)
    assert ours["eodds_diff"] == pytest.approx(max(ours["eop_diff"], fpr_gap), abs=TOL)


@pytest.mark.parametrize("positive_is_disease, fairlearn_gap", [
    (True, false_negative_rate_difference), (False, false_positive_rate_difference)])
def test_underdiagnosis_gap_is_fnr_or_fpr_difference(case, positive_is_disease, fairlearn_gap):
    y, s, g, pred, _ = case
    ours = compute_metrics(y, s, g, group_names=NAMES, positive_is_disease=positive_is_disease)
    assert ours["underdiag_gap"] == pytest.approx(fairlearn_gap(y, pred, sensitive_features=g), abs=TOL)


def test_accuracy_and_loss_aggregates_match_fairlearn(case):
    y, s, g, pred, ours = case
    assert ours["min_acc"] == pytest.approx(accuracy_score_group_min(y, pred, sensitive_features=g), abs=TOL)
    assert ours["acc_gap"] == pytest.approx(accuracy_score_difference(y, pred, sensitive_features=g), abs=TOL)
    assert ours["overall_acc"] == pytest.approx(_frame(accuracy_score, y, pred, g).overall, abs=TOL)
    # log_loss of one class needs labels=[0, 1]: a group's loss is defined even if it had a single class
    loss = _frame(lambda a, b: log_loss(a, b, labels=[0, 1]), y, s, g)
    assert ours["max_group_loss"] == pytest.approx(loss.group_max(), abs=1e-10)
    assert ours["max_group_loss"] == pytest.approx(log_loss_group_max(y, s, sensitive_features=g), abs=1e-10)
    assert ours["overall_bce"] == pytest.approx(loss.overall, abs=1e-10)


def test_per_group_rates_match_metricframe(case):
    y, s, g, pred, ours = case
    frame = _frame({"acc": accuracy_score, "tpr": true_positive_rate, "fpr": false_positive_rate,
                    "fnr": false_negative_rate, "pos_rate": selection_rate, "n": count}, y, pred, g)
    prevalence = _frame(mean_prediction, y, y, g)  # mean of the labels
    for code, name in NAMES.items():
        if code not in frame.by_group.index:
            continue
        for field in ("acc", "tpr", "fpr", "fnr", "pos_rate", "n"):
            assert ours[f"group/{name}/{field}"] == pytest.approx(frame.by_group.loc[code, field], abs=TOL), field
        assert ours[f"group/{name}/prevalence"] == pytest.approx(prevalence.by_group[code], abs=TOL)


def test_the_bootstraps_fast_path_agrees_with_fairlearn_too(case):
    """The bootstrap computes with numpy versions of AUC and the confusion rates (``fast``)."""
    y, s, g, pred, ours = case
    fast = _compute(y, s, g, NAMES, THRESHOLD, True, fast=True)
    assert fast["min_auc"] == pytest.approx(roc_auc_score_group_min(y, s, sensitive_features=g), abs=1e-10)
    assert fast["auc_gap"] == pytest.approx(_frame(roc_auc_score, y, s, g).difference(), abs=1e-10)
    assert fast["eodds_diff"] == pytest.approx(equalized_odds_difference(y, pred, sensitive_features=g), abs=TOL)
    assert fast["dp_diff"] == pytest.approx(demographic_parity_difference(y, pred, sensitive_features=g), abs=TOL)


def test_undefined_rates_are_left_out_where_fairlearn_counts_zero():
    """A group with no positives: its AUC and TPR are undefined. Ours: NaN, left out of every gap.
    fairlearn: MetricFrame's AUC is NaN too (skipped by group_min/difference), but its TPR is 0, so its
    TPR gap and equalised-odds difference count that 0."""
    y, s, g = _data(7, 4)
    minority = g == 3
    y[minority] = 0  # the smallest group loses its positives
    pred = (s >= THRESHOLD).astype(int)
    with pytest.warns(UndefinedGroupMetricWarning, match="very_dark"):
        ours = compute_metrics(y, s, g, group_names=NAMES)
    assert np.isnan(ours["group/very_dark/auc"]) and np.isnan(ours["group/very_dark/tpr"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn: "Only one class is present in y_true"
        auc = _frame(roc_auc_score, y, s, g)
    assert np.isnan(auc.by_group[3])
    assert ours["min_auc"] == pytest.approx(auc.group_min(), abs=TOL)
    assert ours["auc_gap"] == pytest.approx(auc.difference(), abs=TOL)
    assert ours["n_groups_auc_undefined"] == 1.0

    tpr = np.array([ours[f"group/{n}/tpr"] for n in NAMES.values()])
    fpr = np.array([ours[f"group/{n}/fpr"] for n in NAMES.values()])
    assert _frame(true_positive_rate, y, pred, g).by_group[3] == 0.0
    as_zero = np.nan_to_num(tpr, nan=0.0)  # fairlearn's reading of the undefined TPR
    fl_eop = equal_opportunity_difference(y, pred, sensitive_features=g)
    assert fl_eop == pytest.approx(as_zero.max() - as_zero.min(), abs=TOL)
    assert ours["eop_diff"] == pytest.approx(np.nanmax(tpr) - np.nanmin(tpr), abs=TOL)
    assert ours["eop_diff"] <= fl_eop
    fl_eodds = equalized_odds_difference(y, pred, sensitive_features=g)
    assert fl_eodds == pytest.approx(max(fl_eop, fpr.max() - fpr.min()), abs=TOL)
    assert ours["eodds_diff"] == pytest.approx(max(ours["eop_diff"], fpr.max() - fpr.min()), abs=TOL)
    # metrics defined in every group agree exactly
    assert ours["dp_diff"] == pytest.approx(demographic_parity_difference(y, pred, sensitive_features=g), abs=TOL)
    assert ours["min_acc"] == pytest.approx(accuracy_score_group_min(y, pred, sensitive_features=g), abs=TOL)


def test_every_fairlearn_equivalent_names_one_of_our_metrics():
    assert set(FAIRLEARN_EQUIVALENTS) <= set(OVERALL_METRICS)
    for name, theirs in FAIRLEARN_EQUIVALENTS.items():
        function = theirs.split(" ")[0]
        if not function.startswith("mf("):
            assert hasattr(fairlearn_metrics, function), (name, function)
