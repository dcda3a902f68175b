"""The HTML report renders every section from a run folder (and from a parent run id alone),
embeds valid PNGs, and logs the same figures to the parent MLflow run.

The run folder is written by hand with the files ``fairtune-ray search`` produces, and a real
SQLite MLflow store holds a parent run with nested child runs and their per-epoch histories.
"""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fairtune_ray.config import config_from_dict
from fairtune_ray.fisher.stats import STAT_COLUMNS, save_fisher_parquet
from fairtune_ray.metrics import paired_differences
from fairtune_ray.reporting import plots
from fairtune_ray.reporting.report import load_run, write_report
from fairtune_ray.search.results import PAIRED_METRICS, MetricInterval, ResultRow, Role, write_results
from fairtune_ray.search.results import TestScores as SeedScores  # renamed: pytest would collect Test*
from fairtune_ray.search.run_folder import load_test_scores, save_test_scores

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GROUPS = {0: "light", 1: "medium", 2: "dark"}
EPOCHS = 4
N_BITS = 6  # attn_mlp_norm on a depth-2 micro ViT
SECTIONS = ["summary", "results", "pareto", "masks", "roc", "epochs", "fisher"]

# trial id -> (bits, lr, per-epoch val objective, status)
TRIALS = {
    "5e1f0_00000": ("111111", 5e-4, [0.70, 0.74, 0.75, 0.76], "completed"),
    "5e1f0_00001": ("000000", 5e-4, [0.62, 0.64], "stopped_early"),
    "5e1f0_00002": ("010110", 2.1e-4, [0.72, 0.78, 0.81, 0.83], "completed"),
    "5e1f0_00003": ("101000", 8.0e-5, [0.60], "stopped_early"),
    "5e1f0_00004": ("110011", 6.3e-4, [0.69, 0.73, 0.77, 0.78], "completed"),
    "5e1f0_00005": ("011101", 3.3e-5, [0.58], "stopped_early"),
    "5e1f0_00006": ("001100", 1.5e-4, [0.66, 0.71], "stopped_early"),
    "5e1f0_00007": ("111010", 4.0e-4, [0.71, 0.75, 0.79, 0.80], "completed"),
}
SELECTED = "5e1f0_00002"
OVERALL_BONUS = {"5e1f0_00004": 0.12, "5e1f0_00007": 0.06}


def _cfg() -> dict:
    return config_from_dict({"backbone": {"micro": {"depth": 2}}, "train": {"epochs": EPOCHS},
                             "search": {"num_samples": len(TRIALS), "asha": {"grace_period": 1, "reduction_factor": 2}},
                             "data": {"sensitive_attribute": "skin_tone"}}).model_dump()


def _trial_records() -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for tid, (bits, lr, hist, status) in TRIALS.items():
        best = max(hist)
        bonus = OVERALL_BONUS.get(tid, 0.0)  # trials that trade worst-group AUC for overall AUC
        aucs = {"light": best + 0.08 + bonus + 0.01 * rng.random(), "medium": best + 0.04, "dark": best}
        metrics = {"overall_auc": best + 0.06 + bonus, "min_auc": best, "auc_gap": max(aucs.values()) - best,
                   "eodds_diff": 0.1 + 0.05 * rng.random(), "n_groups_auc_undefined": 0.0,
                   **{f"group/{g}/auc": v for g, v in aucs.items()}, **{f"group/{g}/n": "40" for g in aucs}}
        out.append({"trial_id": tid, "config": {**{f"m{i:02d}": int(b) for i, b in enumerate(bits)}, "lr": lr},
                    "metrics": metrics, "objective": best, "epochs": len(hist), "trainable_params": 1000 * bits.count("1") + 194,
                    "status": status})
    return out


def _rows() -> list[ResultRow]:
    rng = np.random.default_rng(1)
    n = 300
    labels = rng.integers(0, 2, n)
    groups = rng.choice([0, 1, 2], n, p=[0.5, 0.3, 0.2])
    rows = []
    for method, role, mask, lr, sep in [
            ("FairTune (selected)", Role.SELECTED, f"attn_mlp_norm:{TRIALS[SELECTED][0]}", 2.1e-4, 1.6),
            ("Full fine-tuning", Role.BASELINE, "full", 5e-4, 1.2), ("Linear probe", Role.BASELINE, "linear", 5e-4, 0.7)]:
        scores = [1 / (1 + np.exp(-(sep * (2 * labels - 1) * (1.0 - 0.3 * (groups == 2)) + rng.normal(0, 1, n))))
                  for _ in range(2)]
        test = {m: MetricInterval(v, v - 0.04, v + 0.04, 0.01)
                for m, v in [("overall_auc", 0.80 + sep / 20), ("min_auc", 0.70 + sep / 20),
                             ("auc_gap", 0.15 - sep / 40), ("eodds_diff", 0.2 - sep / 30)]}
        rows.append(ResultRow(method=method, role=role, mask=mask, lr=lr,
                              trainable_params={"full": 110_000, "linear": 194}.get(mask, 3194), seeds=2,
                              val_objective=0.8, test=test, scores=SeedScores(labels, groups, scores)))
    for row in rows[1:]:  # as the retrain-and-test stage does: selected - row on the same resamples
        row.vs_selected = paired_differences(labels, rows[0].scores.scores, row.scores.scores, groups,
                                             list(PAIRED_METRICS), n_boot=40, seed=0, group_names=GROUPS)
    return rows


def _fisher_frame() -> pd.DataFrame:
    rows = []
    for g in GROUPS.values():
        for b in range(2):
            for part, numel, d in [("attn.qkv.weight", 96 * 288, 0.002 * (b + 1)), ("mlp.fc1.weight", 96 * 384, 0.001),
                                   ("norm1.weight", 96, 0.004)]:
                name = f"blocks.{b}.{part}"
                rows.append({"group": g, "param": name, "layer": name.rpartition(".")[0], "numel": numel,
                             "mean_fisher": 1e-3, "mean_normalised_fisher": 1e-5, "disparity_mean": d,
                             "disparity_max": 3 * d, "importance_mean": 1e-5})
    return pd.DataFrame(rows, columns=STAT_COLUMNS)


def _make_mlflow(uri: str, art: Path, run_dir: Path, trials: list[dict]) -> str:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.create_experiment("fairtune-test", artifact_location=art.as_uri())
    parent = client.create_run(exp, run_name="tiny-search", tags={"fairtune.role": "search"}).info.run_id
    client.log_param(parent, "selected.trial_id", SELECTED)
    client.set_tag(parent, "mlflow.note.content", "placeholder written by the search")
    client.set_tag(parent, "fairtune.model_uri", "models:/m-0123abcd")  # as publish does
    for t in trials:
        bits, lr, hist, status = TRIALS[t["trial_id"]]
        child = client.create_run(exp, run_name=f"attn_mlp_norm[{bits.count('1')}/{len(bits)}]", tags={
            "mlflow.parentRunId": parent, "ray_trial_id": t["trial_id"], "fairtune.status": status}).info.run_id
        client.log_batch(child, metrics=[Metric(k, v, 1000 + e, e) for e, v in enumerate(hist, 1)
                                         for k, v in [("objective", v), ("val/min_auc", v), ("val/group/dark/auc", v)]])
        client.set_terminated(child, "FINISHED")
    for f in ("results.json", "results.csv", "trials.json", "test_scores.npz", "config.yaml"):
        client.log_artifact(parent, str(run_dir / f))
    # as the Fisher integration does: the statistics live in a cache folder and on the parent run only
    client.log_artifact(parent, str(save_fisher_parquet(_fisher_frame(), run_dir.parent.parent / "fisher_cache" /
                                                        "fisher_stats.parquet")), "fisher")
    client.set_terminated(parent, "FINISHED")
    return parent


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("search")
    run_dir = tmp / "runs" / "tiny-search"
    run_dir.mkdir(parents=True)
    trials, rows = _trial_records(), _rows()
    write_results(rows, run_dir)
    (run_dir / "trials.json").write_text(json.dumps(trials, indent=2))
    save_test_scores(rows, run_dir / "test_scores.npz", GROUPS)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(_cfg(), sort_keys=False))
    (run_dir / "stages").mkdir()
    (run_dir / "stages" / "confirm.json").write_text(json.dumps({"statistic": "mean", "trials": [
        {"trial_id": SELECTED, "search_objective": 0.71, "seed_objectives": [0.69, 0.67], "n": 2, "mean": 0.68,
         "sd": 0.014, "lcb": 0.67}]}))
    (run_dir / "stages" / "baseline_lrs.json").write_text(json.dumps({"lr_grid": {
        "Full fine-tuning": [{"lr": 1e-4, "objective": 0.61}, {"lr": 1e-3, "objective": 0.64}]}}))
    uri = f"sqlite:///{tmp / 'mlruns.db'}"
    parent = _make_mlflow(uri, tmp / "art", run_dir, trials)
    (run_dir / "fairtune_run.json").write_text(json.dumps({"name": "tiny-search", "parent_run_id": parent,
                                                           "tracking_uri": uri, "storage": str(tmp / "runs")}))
    return {"run_dir": run_dir, "uri": uri, "parent": parent, "tmp": tmp}


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def _check_pngs(pngs: list[bytes]) -> None:
    import matplotlib.image as mpimg
    from PIL import Image

    for png in pngs:
        assert png.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
        assert mpimg.imread(io.BytesIO(png), format="png").ndim == 3


def test_scores_round_trip(tmp_path):
    rows = _rows()
    scores, names = load_test_scores(save_test_scores(rows, tmp_path / "s.npz", GROUPS))
    assert names == GROUPS and list(scores) == [r.method for r in rows]
    np.testing.assert_allclose(scores["Linear probe"]["scores"][1], rows[2].scores.scores[1], rtol=1e-6)
    assert scores["Full fine-tuning"]["scores"].shape == (2, 300)


def test_report_has_every_section_and_valid_pngs(search_run):
    from mlflow.tracking import MlflowClient

    logs: list[str] = []
    path = write_report(search_run["run_dir"], log=logs.append)
    assert path == search_run["run_dir"] / "report.html"
    html = path.read_text()
    for sec in SECTIONS:
        assert f"<section id={sec}>" in html, sec
    pngs = _images(html)
    assert len(pngs) == 6  # paired differences, pareto, masks, roc, epochs, fisher
    _check_pngs(pngs)
    assert 'class="note"' not in html  # no section fell back to a note
    # the results table shows intervals and the selected row; mask labels come from the mask space
    assert "FairTune (selected)" in html and "[" in html and "attn_mlp_norm[3/6]" in html
    assert "stopped early by ASHA" in html
    # the same figures and the HTML are on the parent run, whose description now summarises the result
    client = MlflowClient(search_run["uri"])
    parent = search_run["parent"]
    names = {a.path for a in client.list_artifacts(parent, "report")}
    assert "report/report.html" in names
    figs = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(parent, "report/figures")}
    assert figs == {p.name for p in (search_run["run_dir"] / "figures").glob("*.png")} and len(figs) == 6
    note = client.get_run(parent).data.tags["mlflow.note.content"]
    assert "8 trials" in note and "4 stopped early" in note and "worst-group AUC" in note and "report/report.html" in note
    # what was searched, the selected model's page and the trials in the runs table, linked
    assert "`attn_mlp_norm` mask space" in note
    exp = client.get_run(parent).info.experiment_id
    assert f"[`models:/m-0123abcd`](#/experiments/{exp}/models/m-0123abcd?workflowType=machine_learning)" in note
    assert f"Trials: [runs table, best first](#/experiments/{exp}/runs?workflowType=machine_learning&" in note
    assert any("logged 6 figures" in line for line in logs)
    # the confirmation of the top trials and the baselines' lr grid
    assert "trained again with 2 seeds" in html and "0.680" in html
    assert "baseline learning rates chosen on validation" in html and "1.0e-03" in html
    # the paired-difference table: selected - each baseline, with a verdict
    assert "Selected minus each other row (paired)" in html and "vs Full fine-tuning" in html
    assert html.count("no detectable difference") + html.count("better") + html.count("worse") >= 2


def test_mask_groups_come_from_the_mask_space(search_run):
    data = load_run(search_run["run_dir"], log=lambda *_: None)
    assert data.group_names == ["blocks.0.norm", "blocks.0.attn", "blocks.0.mlp",
                                "blocks.1.norm", "blocks.1.attn", "blocks.1.mlp"]
    assert data.selected_id == SELECTED
    assert data.baseline_ids == {"full": "5e1f0_00000", "linear": "5e1f0_00001"}
    assert data.history_source.startswith("MLflow")
    hist = {h["trial_id"]: h for h in data.histories}
    assert hist["5e1f0_00003"]["steps"] == [1] and hist["5e1f0_00003"]["status"] == "stopped_early"
    assert hist[SELECTED]["values"] == pytest.approx(TRIALS[SELECTED][2])


def test_report_without_reachable_mlflow_says_so(search_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(search_run["run_dir"], run_dir)
    (run_dir / "report.html").unlink(missing_ok=True)
    missing = tmp_path / "gone.db"
    logs: list[str] = []
    html = write_report(run_dir, tracking_uri=f"sqlite:///{missing}", log=logs.append).read_text()
    assert not missing.exists()  # never creates a store
    assert "MLflow not used" in html and any("does not exist" in line for line in logs)
    # no history and no Fisher statistics without MLflow (or Tune files): the epoch section says why,
    # the Fisher section is left out, the others still render
    assert "<section id=epochs>" in html and "no per-epoch history" in html
    assert "<section id=fisher>" not in html
    assert len(_images(html)) == 4  # paired, pareto, masks, roc
    _check_pngs(_images(html))


def test_cli_report_from_parent_run_id(search_run, tmp_path, capsys):
    from fairtune_ray.cli import main

    out = tmp_path / "dl"
    assert main(["report", search_run["parent"], "--tracking-uri", search_run["uri"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str((out / "report.html").resolve()) in printed
    assert {"results.json", "trials.json", "test_scores.npz", "config.yaml"} <= {p.name for p in out.iterdir()}
    html = (out / "report.html").read_text()
    for sec in SECTIONS:
        assert f"<section id={sec}>" in html, sec
    _check_pngs(_images(html))
    assert len(_images(html)) == 6


def test_cli_report_rejects_unknown_target(tmp_path, capsys):
    from fairtune_ray.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "neither a run folder nor an MLflow run id" in capsys.readouterr().err


def test_epoch_history_falls_back_to_tune_result_files(search_run, tmp_path):
    """Without a reachable MLflow store the per-epoch objective comes from Tune's result.json files."""
    import shutil

    run_dir = tmp_path / "runs" / "offline"
    shutil.copytree(search_run["run_dir"], run_dir)
    for tid, (_, _, hist, _) in TRIALS.items():
        d = run_dir / f"run_trial_{tid}_lr=0.0005"
        d.mkdir()
        (d / "result.json").write_text("".join(json.dumps({"trial_id": tid, "epoch": e, "objective": v}) + "\n"
                                               for e, v in enumerate(hist, 1)))
    (run_dir / "fairtune_run.json").write_text(json.dumps({"name": "offline", "storage": str(tmp_path / "runs")}))
    data = load_run(run_dir, log=lambda *_: None)
    assert not data.mlflow_ok and data.history_source == "Tune result files"
    assert {h["trial_id"]: h["steps"][-1] for h in data.histories}["5e1f0_00003"] == 1
    assert data.selected_id == SELECTED  # found from the results row's mask and lr
    html = write_report(run_dir, log=lambda *_: None).read_text()
    assert "no per-epoch history" not in html and len(_images(html)) == 5


def _relabel(run_dir: Path, labels: dict[str, str]) -> list[ResultRow]:
    """Rewrite results.json and test_scores.npz with new method labels (roles unchanged)."""
    rows = _rows()
    for r in rows:
        r.method = labels.get(r.method, r.method)
    write_results(rows, run_dir)
    save_test_scores(rows, run_dir / "test_scores.npz", GROUPS)
    return rows


def _figure_with_axes_title(figs: list, prefix: str):
    return next(f for f in figs if any(ax.get_title().startswith(prefix) for ax in f.axes))


def test_selected_row_is_found_by_its_role_not_its_label(search_run, tmp_path, monkeypatch):
    """A selected row labelled without the word "selected" is still the highlighted one, and a baseline
    whose label contains "(selected)" is not."""
    import shutil

    run_dir = tmp_path / "relabelled"
    shutil.copytree(search_run["run_dir"], run_dir)
    (run_dir / "fairtune_run.json").write_text(json.dumps({"name": "relabelled"}))
    _relabel(run_dir, {"FairTune (selected)": "My pick", "Full fine-tuning": "Full fine-tuning (selected baseline)"})
    drawn = []
    to_png = plots.to_png
    monkeypatch.setattr(plots, "to_png", lambda fig: drawn.append(fig) or to_png(fig))
    html = write_report(run_dir, log=lambda *_: None).read_text()

    assert re.search(r'<tr class="selected"><td>My pick</td>', html)
    assert not re.search(r'<tr class="selected"><td>Full fine-tuning', html)
    assert "Selected attn_mlp_norm[3/6] (attn_mlp_norm:010110" in html and "vs Full fine-tuning (selected baseline)" in html
    # test panel of the Pareto figure: the star is the selected row's
    test_ax = _figure_with_axes_title(drawn, "Retrained configurations on test").axes[1]
    markers = {label: bars[0].get_marker() for bars, label in zip(*test_ax.get_legend_handles_labels())}
    assert markers == {"My pick": "*", "Full fine-tuning (selected baseline)": "o", "Linear probe": "o"}
    # ROC: the selected row's scores (found by its label in test_scores.npz) drawn thickest
    roc_ax = _figure_with_axes_title(drawn, "all test images").axes[0]
    widths = {line.get_label().split(" (AUC")[0]: line.get_linewidth() for line in roc_ax.get_lines()}
    assert widths["My pick"] == 2.4 and widths["Full fine-tuning (selected baseline)"] == 1.5
    assert set(widths) == {"My pick", "Full fine-tuning (selected baseline)", "Linear probe", "chance"}


def test_results_without_roles_mark_the_labelled_row_selected(search_run, tmp_path):
    """results.json from before rows had a role: the "(selected)" label is the only hint (legacy support)."""
    import shutil

    run_dir = tmp_path / "legacy"
    shutil.copytree(search_run["run_dir"], run_dir)
    flat = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").write_text(json.dumps([{k: v for k, v in d.items() if k != "role"} for d in flat]))
    (run_dir / "fairtune_run.json").write_text(json.dumps({"name": "legacy"}))
    data = load_run(run_dir, log=lambda *_: None)
    assert [r.role for r in data.results] == [Role.SELECTED, Role.BASELINE, Role.BASELINE]
    assert data.selected_id == SELECTED  # found from the selected row's mask and lr
    html = write_report(run_dir, log=lambda *_: None).read_text()
    assert re.search(r'<tr class="selected"><td>FairTune \(selected\)</td>', html)
