"""``evaluate`` and ``predict`` on bad input: a clear ``error:`` naming the thing and exit code 2,
before any image is scored (the model here is an untrained micro ViT; nothing is fine-tuned)."""
import numpy as np
import pandas as pd
import pytest

from fairtune_ray.cli import main
from fairtune_ray.config import load_config
from fairtune_ray.data.manifest import DatasetInfo, write_packed_dataset
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.export.capture import capture
from fairtune_ray.export.folder import write_model_folder
from fairtune_ray.export.metadata import model_metadata
from fairtune_ray.models import create_backbone
from fairtune_ray.training.spec import TrialSpec


def _dataset(folder, size: int = 32, splits=("test",) * 6) -> str:
    n = len(splits)
    manifest = pd.DataFrame({"sample_id": np.arange(n), "image": [f"{i}.png" for i in range(n)],
                             "label": [i % 2 for i in range(n)], "sex": [i // 2 % 2 for i in range(n)],
                             "patient_id": [f"p{i}" for i in range(n)], "split": list(splits)})
    info = DatasetInfo("toy", {"sex": {0: "M", 1: "F"}})
    images = np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    return write_packed_dataset(str(folder), manifest, iter(images), info)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model_commands")
    cfg = load_config(None, overrides={"data.sensitive_attribute": "sex"})
    data_dir = _dataset(tmp / "toy32")
    model = create_backbone(cfg.backbone.model_copy(update={"pretrained": False}), num_classes=1)
    weights = capture(model)
    info = DatasetInfo("toy", {"sex": {0: "M", 1: "F"}}, image_size=32, channels=3)
    data = PackedDataset(pd.DataFrame({"sample_id": [0], "split": ["test"], "label": [0], "sex": [0]}),
                         np.zeros((1, 32, 32, 3), np.uint8), info)
    meta = model_metadata(cfg, TrialSpec(mask="linear"), data, preprocess=weights.preprocess,
                          provenance={"method": "toy"}, evidence={})
    write_model_folder(tmp / "run" / "model", weights.weights, meta)
    return {"tmp": tmp, "run": str(tmp / "run"), "data": data_dir}


def _fails(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # MLflow may log before it (creating a new store)
    assert last.startswith("error: ")
    return last


def test_a_good_dataset_scores(files, tmp_path, capsys):
    out = tmp_path / "s.parquet"
    assert main(["predict", files["run"], files["data"], "--out", str(out)]) == 0
    assert len(pd.read_parquet(out)) == 6


def test_folder_without_model_json(files, tmp_path, capsys):
    err = _fails(capsys, "evaluate", str(tmp_path), files["data"])
    assert str(tmp_path) in err and "model.json" in err


def test_model_path_that_does_not_exist(files, tmp_path, capsys):
    err = _fails(capsys, "predict", str(tmp_path / "nope"), files["data"])
    assert "nope" in err and "does not exist" in err


def test_image_size_differs_from_the_model(files, capsys):
    data16 = _dataset(files["tmp"] / "toy16", size=16)
    err = _fails(capsys, "evaluate", files["run"], data16)
    assert "16x16" in err and "32x32" in err and "toy16" in err


def test_attribute_missing_from_the_dataset(files, capsys):
    err = _fails(capsys, "evaluate", files["run"], files["data"], "--attribute", "skin_tone")
    assert "'skin_tone'" in err and "['sex']" in err


def test_model_attribute_missing_from_the_dataset(files, capsys):
    data = _dataset(files["tmp"] / "toy_other")
    meta_path = files["tmp"] / "run" / "model" / "model.json"
    text = meta_path.read_text()
    meta_path.write_text(text.replace('"sensitive_attribute": "sex"', '"sensitive_attribute": "age"'))
    try:
        err = _fails(capsys, "evaluate", files["run"], data)
    finally:
        meta_path.write_text(text)
    assert "'age'" in err and "--attribute" in err


def test_split_without_rows(files, capsys):
    err = _fails(capsys, "evaluate", files["run"], files["data"], "--split", "val")
    assert "split 'val' has no rows" in err and "'test': 6" in err


def test_not_a_prepared_dataset(files, tmp_path, capsys):
    err = _fails(capsys, "predict", files["run"], str(tmp_path))
    assert "not a prepared dataset" in err


def test_unknown_registered_model_and_version(files, tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    from fairtune_ray.export.mlflow_model import log_model, register_model
    from fairtune_ray.tracking import start_parent_run

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    err = _fails(capsys, "evaluate", "models:/nope/1", files["data"], "--tracking-uri", uri)
    assert "no registered model named 'nope'" in err and uri in err
    run_id = start_parent_run(uri, "x", "x", params={})
    log_model(MlflowClient(uri), run_id, files["tmp"] / "run" / "model")
    register_model(uri, run_id, "toy")
    err = _fails(capsys, "predict", "models:/toy/9", files["data"], "--tracking-uri", uri)
    assert "has no version 9" in err and "versions: 1" in err
