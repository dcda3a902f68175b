"""search.constraint in the select and baseline_lrs stages and in the report, on recorded trials
(MLflow and Ray replaced by fakes)."""
from __future__ import annotations

from pathlib import Path

import pytest

from fairtune_ray.config import load_config
from fairtune_ray.reporting.html import render_html, summary_text, top_trial_rows
from fairtune_ray.reporting.run_data import RunData
from fairtune_ray.search.constraint import ConstraintUnresolved
from fairtune_ray.search.space import baseline_points
from fairtune_ray.search.stages import baseline_lrs, select as select_stage
from fairtune_ray.search.stages.types import Confirmation, Prepared, TuneOutcome

N_BITS = 4


class FakeClient:
    """Records what a stage tells MLflow."""

    calls: list = []

    def __init__(self, *_a, **_k):
        pass

    def __getattr__(self, name):
        return lambda *a, **k: FakeClient.calls.append((name, a))


@pytest.fixture(autouse=True)
def fake_mlflow(monkeypatch):
    FakeClient.calls = []
    monkeypatch.setattr(select_stage, "MlflowClient", FakeClient)
    monkeypatch.setattr(baseline_lrs, "MlflowClient", FakeClient)
    monkeypatch.setattr("fairtune_ray.search.constraint.MlflowClient", FakeClient)


def prepared(constraint, tmp_path, **more) -> Prepared:
    cfg = load_config(None, overrides={"train.objective": "overall_auc", "search.constraint": constraint, **more})
    return Prepared(cfg, "t", tmp_path, str(tmp_path), "sqlite:///x.db", "parent", cfg.mask.space, N_BITS, {0: "a", 1: "b"})


def recorded_trials(cfg, full_status="completed") -> list[dict]:
    """The two baseline points and two searched trials; 'best' has the highest overall AUC but the
    widest gap, wider than full fine-tuning's."""
    full, linear = baseline_points(cfg, N_BITS)

    def t(tid, config, auc, gap, status="completed"):
        return {"trial_id": tid, "config": dict(config), "objective": auc, "status": status, "epochs": 2,
                "metrics": {"overall_auc": auc, "auc_gap": gap, "min_auc": auc - gap / 2}}
    bits = {f"m0{i}": b for i, b in enumerate((1, 0, 1, 0))}
    return [t("full", full, 0.80, 0.10, full_status), t("linear", linear, 0.70, 0.05),
            t("best", {**bits, "lr": 2e-4}, 0.90, 0.20), t("fair", {**bits, "lr": 1e-4}, 0.85, 0.08)]


def test_select_skips_the_infeasible_best_trial_and_records_why(tmp_path):
    p = prepared("auc_gap <= full", tmp_path)
    logs: list[str] = []
    sel = select_stage.select(p, TuneOutcome(recorded_trials(p.cfg), {}), None, log=logs.append)
    assert sel.selected["trial_id"] == "fair"
    assert sel.selected["constraint"] == {"text": "auc_gap <= full", "resolved": "auc_gap <= 0.1", "violation": 0.0,
                                          "feasible": True, "n_feasible": 3, "n_candidates": 4}
    assert sel.selected_spec.lr == pytest.approx(1e-4)
    text = "\n".join(logs)
    assert "3 of 4 trials feasible" in text and "feasible: auc_gap <= 0.1" in text
    table = next(a[1] for name, a in FakeClient.calls if name == "log_text" and a[2] == "constraint.md")
    assert table.index("fair *") < table.index("best")  # infeasible rows last
    assert ("log_param", ("parent", "constraint.resolved", "auc_gap <= 0.1")) in FakeClient.calls


def test_select_without_a_feasible_trial_takes_the_least_violating_and_says_so(tmp_path):
    p = prepared("auc_gap <= 0.04", tmp_path)
    logs: list[str] = []
    sel = select_stage.select(p, TuneOutcome(recorded_trials(p.cfg), {}), None, log=logs.append)
    assert sel.selected["trial_id"] == "linear" and not sel.selected["constraint"]["feasible"]
    assert any(line.startswith("WARNING: no trial satisfies search.constraint 'auc_gap <= 0.04'") for line in logs)
    assert ("set_tag", ("parent", "fairtune.selected_feasible", "false")) in FakeClient.calls


def test_select_ranks_confirmed_trials_by_their_seed_means_feasible_first(tmp_path):
    p = prepared("auc_gap <= full", tmp_path)
    trials = recorded_trials(p.cfg)
    confirmed = [dict(trials[2], objective=0.91, metrics={"auc_gap": 0.15}, n=2),  # still too wide
                 dict(trials[3], objective=0.84, metrics={"auc_gap": 0.09}, n=2)]
    sel = select_stage.select(p, TuneOutcome(trials, {}), Confirmation(confirmed, "mean"), log=lambda *_: None)
    assert sel.selected["trial_id"] == "fair" and sel.selected["constraint"]["n_candidates"] == 2


def test_a_failed_baseline_trial_fails_selection_and_the_parent_run(tmp_path):
    p = prepared("auc_gap <= full", tmp_path)
    logs: list[str] = []
    with pytest.raises(ConstraintUnresolved, match="'full' baseline trial, which failed"):
        select_stage.select(p, TuneOutcome(recorded_trials(p.cfg, full_status="failed"), {}), None, log=logs.append)
    assert ("set_terminated", ("parent", "FAILED")) in FakeClient.calls
    assert any(line.startswith("error: search.constraint 'auc_gap <= full'") for line in logs)


def test_baseline_lrs_are_chosen_among_feasible_ones(tmp_path, monkeypatch):
    p = prepared("auc_gap <= full", tmp_path, **{"search.baseline_lrs": [1e-4, 1e-3], "search.baselines": ["full"]})
    sel = select_stage.select(p, TuneOutcome(recorded_trials(p.cfg), {}), None, log=lambda *_: None)
    fits = {("Full fine-tuning", 1e-4): {"objective": 0.80, "metrics": {"auc_gap": 0.09}},
            ("Full fine-tuning", 1e-3): {"objective": 0.88, "metrics": {"auc_gap": 0.30}}}
    monkeypatch.setattr(baseline_lrs, "run_validation_fits", lambda cfg, specs, data, ckpt: fits)
    logs: list[str] = []
    out = baseline_lrs.tune_baseline_lrs(p, sel, log=logs.append)
    assert out.candidates[1].spec.lr == pytest.approx(1e-4)  # 1e-3 scores higher but breaks the bound
    assert "feasible: auc_gap <= 0.1" in "\n".join(logs)


def _run_data(tmp_path: Path, constraint: str, selected_id: str) -> RunData:
    cfg = load_config(None, overrides={"train.objective": "overall_auc", "search.constraint": constraint})
    return RunData(tmp_path, {"name": "t"}, [], recorded_trials(cfg), config=cfg.model_dump(),
                   bit_keys=[f"m0{i}" for i in range(N_BITS)], selected_id=selected_id)


def test_report_marks_feasibility_and_warns_when_nothing_is_feasible(tmp_path):
    data = _run_data(tmp_path, "auc_gap <= full", "fair")
    rows = top_trial_rows(data)
    assert [r["trial_id"] for r in rows] == ["fair", "full", "linear", "best"]  # feasible first
    assert [r["feasible"] for r in rows] == ["yes", "yes", "yes", "no (0.1)"]
    html = render_html(data, [], "mlflow")
    assert "feasible: <code>auc_gap &lt;= 0.1</code>" in html and "<td>no (0.1)</td>" in html
    assert "3 of 4 candidates feasible" in summary_text(data) and "the selection is feasible" in summary_text(data)
    assert "WARNING" not in html

    none = _run_data(tmp_path, "auc_gap <= 0.01", "linear")
    html = render_html(none, [], "mlflow")
    assert "WARNING: no candidate satisfies the constraint auc_gap &lt;= 0.01" in html
    assert "least-violating one (violation 0.04)" in html
    assert "**WARNING: no candidate" in summary_text(none)  # the MLflow note says it too


def test_report_without_a_constraint_has_no_feasibility_column(tmp_path):
    cfg = load_config(None)
    data = RunData(tmp_path, {"name": "t"}, [], recorded_trials(cfg), config=cfg.model_dump())
    assert all(r["feasible"] == "" for r in top_trial_rows(data))
    assert "feasible:" not in render_html(data, [], "mlflow")
