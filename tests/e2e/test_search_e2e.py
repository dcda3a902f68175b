"""Acceptance for the search: real local Ray, real SQLite MLflow store, ASHA, nested runs."""
import json

import pytest
from mlflow.tracking import MlflowClient

from fairtune_ray.config import load_config
from fairtune_ray.search.results import Role
from fairtune_ray.search.space import baseline_points, matches_point
from fairtune_ray.study import run_search

STAGES = {"prepare", "tune", "confirm", "select", "baseline_lrs", "retrain_test", "publish", "report"}


@pytest.mark.slow
def test_search_end_to_end(tiny_overrides, ray_local, tmp_path):
    cfg = load_config(None, overrides={**tiny_overrides, "search.num_samples": 8, "train.epochs": 3,
                                       "search.asha.grace_period": 1, "search.asha.reduction_factor": 2,
                                       "search.n_initial_points": 3,
                                       "search.confirm.top_k": 2, "search.confirm.seeds": 2,
                                       "search.baseline_lrs": [1e-4, 1e-3]})
    out = run_search(cfg, name="e2e", log=lambda *_: None)

    client = MlflowClient(out.tracking_uri)
    parent = client.get_run(out.parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{out.parent_run_id}'")
    assert len(children) == 8
    assert len({c.data.tags["ray_trial_id"] for c in children}) == 8
    for child in children:
        assert ":" in child.data.params["mask"] and child.data.params["space"] == "attn_mlp_norm"
        assert int(child.data.params["trainable_params"]) > 0
        history = client.get_metric_history(child.info.run_id, "val/group/dark/auc")
        assert len(history) >= 1
        assert child.data.tags["fairtune.status"] in ("completed", "stopped_early")
    statuses = [c.data.tags["fairtune.status"] for c in children]
    assert "stopped_early" in statuses, statuses
    multi_epoch = [c for c in children if len(client.get_metric_history(c.info.run_id, "val/min_auc")) >= 2]
    assert multi_epoch, "some trial must report metrics at several epochs"

    methods = [r.method for r in out.rows]
    assert methods[0] == "FairTune (selected)" and "Full fine-tuning" in methods and "Linear probe" in methods
    assert [r.role for r in out.rows] == [Role.SELECTED] + [Role.BASELINE] * (len(out.rows) - 1)
    for row in out.rows:
        for m in ("overall_auc", "min_auc", "auc_gap", "eodds_diff"):
            assert row.test[m].lo <= row.test[m].hi
    # every other row is compared with the selected one on the same test resamples
    for row in out.rows[1:]:
        assert set(row.vs_selected) == {"min_auc", "auc_gap", "overall_auc"}
        d = row.vs_selected["min_auc"]
        assert d.lo <= d.hi and d.n_valid == 50  # search.bootstrap replicates, all defined (group x label strata)
        assert d.diff == pytest.approx(out.rows[0].metric("min_auc") - row.metric("min_auc"), abs=1e-9)
        assert d.verdict in ("better", "worse", "no detectable difference")
    assert not out.rows[0].vs_selected
    # the training split's worst-group AUC at the tested epoch sits beside the test value (the generalisation gap)
    assert all(0.0 <= row.train["min_auc"] <= 1.0 for row in out.rows)
    saved = json.loads((out.run_dir / "results.json").read_text())
    assert saved[0]["train/min_auc"] == pytest.approx(out.rows[0].train["min_auc"])
    assert [r["method"] for r in saved] == methods and saved[0]["role"] == "selected"
    assert (out.run_dir / "results.csv").exists()
    finished = client.get_run(out.parent_run_id)
    assert finished.data.params["selected.mask"] == out.rows[0].mask
    assert "mlflow.note.content" in finished.data.tags
    assert finished.data.metrics["full_fine-tuning/train/min_auc"] == pytest.approx(out.rows[1].train["min_auc"])
    assert finished.data.metrics["full_fine-tuning/vs_selected/min_auc"] == pytest.approx(
        out.rows[1].vs_selected["min_auc"].diff)
    artifacts = {a.path for a in client.list_artifacts(out.parent_run_id)}
    assert {"results.csv", "results.json", "config.yaml", "paired_differences.md", "environment.json",
            "confirmation.md", "baseline_lrs.md"} <= artifacts
    # the selected model is exported (first retrain seed) to the run folder and the parent run
    model = json.loads((out.run_dir / "model" / "model.json").read_text())
    assert model["role"] == "selected" and model["spec"]["mask"] == out.rows[0].mask and model["seed"] == cfg.train.seed
    assert model["row_test_metrics"]["min_auc"]["point"] == pytest.approx(out.rows[0].metric("min_auc"))
    assert (out.run_dir / "model" / "model.safetensors").is_file() and not (out.run_dir / "models").exists()
    [logged] = client.search_logged_models([parent.info.experiment_id])
    assert finished.data.tags["fairtune.model_uri"] == f"models:/{logged.model_id}"
    assert logged.source_run_id == out.parent_run_id and logged.name == "model"

    # noise-aware selection: the top trials were confirmed with 2 seeds on train + validation only,
    # the selected one among them; the baselines ran to the last epoch; each baseline's lr came from its grid
    confirmed = json.loads((out.run_dir / "stages" / "confirm.json").read_text())["trials"]
    assert len(confirmed) == 2 and all(c["n"] == 2 and c["splits_given"] == ["train", "val"] for c in confirmed)
    assert out.selected["trial_id"] in {c["trial_id"] for c in confirmed}
    assert out.selected["objective"] == max(c["mean"] for c in confirmed)
    n_bits = sum(1 for k in out.trials[0]["config"] if k.startswith("m"))
    for point in baseline_points(cfg, n_bits):
        [trial] = [t for t in out.trials if matches_point(t["config"], point)]
        assert trial["status"] == "completed" and trial["epochs"] == 3
    lr_grid = json.loads((out.run_dir / "stages" / "baseline_lrs.json").read_text())["lr_grid"]
    for row in out.rows[1:]:
        tried = lr_grid[row.method]
        assert [t["lr"] for t in tried] == [1e-4, 1e-3]
        assert row.lr == max(tried, key=lambda t: t["objective"])["lr"]
        assert finished_params(client, out)[f"baseline.{row.method.lower().replace(' ', '_')}.lr"] == f"{row.lr:.3e}"

    # every stage recorded its output; the report is the last stage
    assert {p.stem for p in (out.run_dir / "stages").glob("*.json")} == STAGES
    assert out.report == out.run_dir / "report.html" and out.report.is_file()

    # resuming a finished study restores the recorded stages: no trial, no retrain runs again
    logs: list[str] = []
    again = run_search(cfg, name="e2e", resume=True, log=lambda *a: logs.append(" ".join(map(str, a))))
    restored = {line.split()[1].rstrip(":") for line in logs if line.startswith("stage ") and "restored" in line}
    assert restored == {"tune", "confirm", "select", "baseline_lrs", "retrain_test"}, logs
    assert not any("retraining" in line for line in logs)
    assert again.parent_run_id == out.parent_run_id and [r.method for r in again.rows] == methods
    assert [r.metric("min_auc") for r in again.rows] == [r.metric("min_auc") for r in out.rows]
    assert client.get_run(out.parent_run_id).info.status == "FINISHED"


def finished_params(client, out) -> dict:
    return client.get_run(out.parent_run_id).data.params
