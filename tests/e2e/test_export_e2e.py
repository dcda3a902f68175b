"""The exported model end to end, without a search: one retrain exactly as the retrain_test stage
runs it (in-process), its model folder, ``evaluate`` and ``predict`` through the CLI, the MLflow
pyfunc model and the Model Registry on a real SQLite store."""
import json
import math
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import TINY
from mlflow.tracking import MlflowClient

from fairtune_ray.cli import main
from fairtune_ray.config import load_config
from fairtune_ray.data.loading import load_dataset
from fairtune_ray.data.synthetic import ensure_synthetic
from fairtune_ray.export.folder import read_model_meta
from fairtune_ray.export.mlflow_model import register_model
from fairtune_ray.export.rebuild import ExportedModel
from fairtune_ray.search.exports import MODEL_URI_TAG, log_exports, write_exports
from fairtune_ray.search.results import Role
from fairtune_ray.search.stages.retrain_test import _retrain, result_row
from fairtune_ray.search.stages.types import Candidate, Prepared
from fairtune_ray.tracking import start_parent_run
from fairtune_ray.training.pretrain import resolve_checkpoint
from fairtune_ray.training.spec import TrialSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory, session_cache):
    tmp = tmp_path_factory.mktemp("export")
    cfg = load_config(None, overrides={**TINY, "data.cache_dir": session_cache})
    data = load_dataset(cfg.data)
    checkpoint = resolve_checkpoint(cfg, log=lambda *_: None)
    spec = TrialSpec(mask="attn_mlp_norm:" + "0" * 12 + "111111", lr=1e-3, seed=cfg.train.seed)
    out = _retrain(cfg.model_dump(), spec, data, checkpoint, export=True)
    candidate = Candidate("FairTune (selected)", Role.SELECTED, spec)
    group_names = data.info.attributes[cfg.data.sensitive_attribute]
    row = result_row(cfg, candidate, [out], group_names)
    prepared = Prepared(cfg, "export-e2e", tmp / "run", "runs", "sqlite://", "parent", cfg.mask.space, 18, group_names,
                        data=data)
    [folder] = write_exports(prepared, [candidate], [row], {candidate.method: out})
    return SimpleNamespace(cfg=cfg, data=data, data_uri=ensure_synthetic(cfg.data.synthetic, session_cache),
                           run_dir=tmp / "run", folder=folder, out=out, row=row, meta=read_model_meta(folder))


def _evaluate(args, tmp_path, capsys) -> dict:
    out = tmp_path / "evaluation.json"
    assert main(["evaluate", *args, "--out", str(out), "--bootstrap", "50"]) == 0, capsys.readouterr().err
    return json.loads(out.read_text())


def _assert_same_metrics(computed: dict, recorded: dict):
    finite = {k: v for k, v in recorded.items() if v is not None and math.isfinite(v)}
    assert len(finite) > 20 and {"min_auc", "auc_gap", "overall_auc", "group/dark/auc"} <= set(finite)
    for k, v in finite.items():
        assert computed[k] == pytest.approx(v, abs=1e-6), k


def test_model_folder_records_the_exported_seed_and_its_row(exported):
    meta = exported.meta
    assert meta["role"] == "selected" and meta["seed"] == exported.cfg.train.seed
    assert meta["spec"]["mask"].endswith("111111") and meta["trainable_params"] == exported.out["trainable"]
    assert meta["row_test_metrics"]["min_auc"]["point"] == pytest.approx(exported.row.metric("min_auc"))
    assert meta["row_test_metrics"]["min_auc"]["lo"] <= meta["row_test_metrics"]["min_auc"]["hi"]
    assert meta["data"]["label_names"] == {"0": "benign", "1": "malignant"} and meta["positive_label"] == 1
    assert (exported.folder / "model.safetensors").stat().st_size > 100_000


def test_evaluate_reproduces_the_exported_seeds_test_metrics(exported, tmp_path, capsys):
    report = _evaluate([str(exported.run_dir), exported.data_uri], tmp_path, capsys)
    _assert_same_metrics(report["metrics"], exported.meta["test_metrics"])
    assert report["split"] == "test" and report["same_data_as_training"] is True
    assert report["n"] == int((exported.data.manifest["split"] == "test").sum())
    iv = report["intervals"]["min_auc"]
    assert iv["lo"] <= iv["point"] <= iv["hi"] and "group/dark/auc" in report["intervals"]
    printed = capsys.readouterr().out
    assert "| dark" in printed and "min_auc" in printed and "[" in printed and "written:" in printed


def test_evaluate_audits_another_attribute(exported, tmp_path, capsys):
    report = _evaluate([str(exported.folder), exported.data_uri, "--attribute", "sex"], tmp_path, capsys)
    assert report["attribute"] == "sex" and report["model_attribute"] == "skin_tone"
    assert set(report["groups"]) == {"M", "F"}
    assert report["metrics"]["overall_auc"] == pytest.approx(exported.meta["test_metrics"]["overall_auc"], abs=1e-6)


def test_predict_writes_one_row_per_image_of_the_split(exported, tmp_path, capsys):
    out = tmp_path / "scores.parquet"
    assert main(["predict", str(exported.run_dir), exported.data_uri, "--split", "test", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    test = exported.data.manifest[exported.data.manifest["split"] == "test"]
    assert len(table) == len(test) and table["sample_id"].tolist() == test["sample_id"].tolist()
    assert {"sample_id", "patient_id", "split", "skin_tone", "skin_tone_group", "sex", "sex_group", "label",
            "score"} <= set(table.columns)
    assert set(table["split"]) == {"test"} and set(table["skin_tone_group"]) == {"light", "medium", "dark"}
    np.testing.assert_allclose(table["score"].to_numpy(), exported.out["scores"], atol=1e-6)
    assert str(out) in capsys.readouterr().out


def test_pyfunc_model_and_models_uri_through_a_sqlite_registry(exported, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the SQLite store's default artifact root is ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    run_id = start_parent_run(uri, "export-e2e", "search", params={})
    client = MlflowClient(uri)
    lines: list[str] = []
    model_uri = log_exports(client, run_id, exported.run_dir, [exported.row], log=lines.append)
    assert model_uri.startswith("models:/m-") and str(exported.folder.resolve()) in lines[0]
    # an MLflow 3 logged model linked to the run (the run page's "Logged models", the Models tab), with metrics
    [logged] = client.search_logged_models([client.get_run(run_id).info.experiment_id])
    assert f"models:/{logged.model_id}" == model_uri and logged.source_run_id == run_id and logged.status == "READY"
    assert logged.metrics and all(m.model_id == logged.model_id for m in logged.metrics)
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [logged.model_id]
    client.set_tag(run_id, MODEL_URI_TAG, model_uri)
    version = register_model(uri, run_id, "fair-derm")
    assert (version.name, str(version.version)) == ("fair-derm", "1")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    pyfunc = mlflow.pyfunc.load_model("models:/fair-derm/1")
    assert pyfunc.metadata.get_input_schema().inputs[0].type == np.dtype("uint8")
    images = np.asarray(exported.data.split("test").images)
    direct = ExportedModel(exported.folder, device="cpu").score(images)
    np.testing.assert_allclose(pyfunc.predict(images), direct, atol=1e-6)
    np.testing.assert_allclose(direct, exported.out["scores"], atol=1e-6)

    report = _evaluate(["models:/fair-derm/1", exported.data_uri, "--tracking-uri", uri, "--log-mlflow"], tmp_path, capsys)
    _assert_same_metrics(report["metrics"], exported.meta["test_metrics"])
    [run] = client.search_runs([client.get_experiment_by_name("fairtune-evaluate").experiment_id])
    assert run.data.metrics["min_auc"] == pytest.approx(report["metrics"]["min_auc"])
    assert "min_auc_lo" in run.data.metrics and run.data.tags["fairtune.role"] == "evaluation"
