"""Acceptance for ``search.constraint``: a real search (local Ray, SQLite MLflow) that maximises the
overall AUC subject to a worst-group AUC bound, where the trial with the best overall AUC breaks
the bound and must not be selected."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from fairtune_ray.config import load_config
from fairtune_ray.study import run_search

#: between the val worst-group AUC of the best-overall-AUC trial and that of a better-balanced one on
#: the tiny synthetic study below (deterministic with one concurrent trial; the premise is asserted)
BOUND = 0.55


@pytest.mark.slow
def test_the_infeasible_best_trial_is_not_selected(tiny_overrides, ray_local):
    cfg = load_config(None, overrides={**tiny_overrides, "train.objective": "overall_auc",
                                       "search.constraint": f"min_auc >= {BOUND}", "search.max_concurrent": 1,
                                       "search.num_samples": 4, "search.n_initial_points": 4,
                                       "search.baselines": []})  # no baseline retrains: the selection is the point
    out = run_search(cfg, name="constrained", log=lambda *_: None)

    trials = [t for t in out.trials if t.get("status") != "failed"]
    unconstrained = max(trials, key=lambda t: t["metrics"]["overall_auc"])
    feasible = [t for t in trials if t["metrics"]["min_auc"] >= BOUND]
    summary = [(t["trial_id"], round(t["metrics"]["overall_auc"], 4), round(t["metrics"]["min_auc"], 4))
               for t in trials]
    # the premise: the best trial by the objective alone breaks the bound, and some trial meets it
    assert unconstrained["metrics"]["min_auc"] < BOUND and feasible, summary

    chosen = out.selected
    assert chosen["trial_id"] != unconstrained["trial_id"], summary
    assert chosen["trial_id"] == max(feasible, key=lambda t: t["metrics"]["overall_auc"])["trial_id"], summary
    assert chosen["constraint"]["feasible"] and chosen["constraint"]["n_feasible"] == len(feasible)

    client = MlflowClient(out.tracking_uri)
    parent = client.get_run(out.parent_run_id)
    assert parent.data.tags["fairtune.selected_feasible"] == "true"
    assert "constraint.md" in {a.path for a in client.list_artifacts(out.parent_run_id)}
    # what TPE saw for the infeasible best: its value penalised by constraint_penalty x violation
    violation = BOUND - unconstrained["metrics"]["min_auc"]
    assert unconstrained["objective"] == pytest.approx(unconstrained["metrics"]["overall_auc"], abs=1e-9)
    assert unconstrained["search_value"] == pytest.approx(
        unconstrained["metrics"]["overall_auc"] - cfg.search.constraint_penalty * violation, abs=1e-6)
    html = out.report.read_text()
    assert "feasible: <code>min_auc &gt;= 0.55</code>" in html or "feasible: <code>min_auc >= 0.55</code>" in html
