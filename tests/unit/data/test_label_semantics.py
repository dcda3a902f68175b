"""Which label is the disease: recorded in dataset.json by the adapters, read by every metric, so
underdiagnosis (a sick patient called healthy) is the FPR of label 1 where label 1 is "no finding"."""
from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import fixtures_data as fx
import numpy as np
import pytest

from fairtune_ray.data.adapters import ADAPTERS, get_adapter
from fairtune_ray.data.manifest import DataError, DatasetInfo, load_manifest
from fairtune_ray.data.prepare import format_summary, prepare_dataset
from fairtune_ray.export.evaluation import evaluate_scores
from fairtune_ray.metrics import compute_metrics
from fairtune_ray.training import loop
from fairtune_ray.training.loop import SplitScores, split_metrics

DISEASE_LABEL = {"ham10000": 1, "fitzpatrick17k": 1, "papila": 1, "chexpert": 0, "mimic-cxr": 0, "ol3i": 1,
                 "harvard-gf": 1, "oasis-1": 1, "generic": 1}
DISEASE_NAME = {"ham10000": "malignant", "fitzpatrick17k": "malignant", "papila": "glaucoma", "chexpert": "finding",
                "mimic-cxr": "finding", "ol3i": "IHD", "harvard-gf": "glaucoma", "oasis-1": "dementia (CDR > 0)"}


def _rate_gap(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, true_label: int) -> float:
    """max - min over groups of the share of ``true_label`` images predicted as the other label (at 0.5)."""
    rates = []
    for g in np.unique(groups):
        m = (groups == g) & (labels == true_label)
        pred_one = scores[m] >= 0.5
        rates.append(np.mean(pred_one if true_label == 0 else ~pred_one))
    return float(max(rates) - min(rates))


@pytest.fixture
def cxr(tmp_path):
    """The CXR-style prepared dataset: (manifest, info, scores)."""
    uri, scores = fx.build_cxr_prepared(tmp_path / "cxr")
    manifest, info = load_manifest(uri)
    return manifest, info, scores


# ------------------------------------------------------------------ dataset.json


def test_dataset_json_round_trips_the_disease_label():
    info = DatasetInfo("cxr", {"sex": {0: "F", 1: "M"}}, label_names={0: "finding", 1: "no finding"}, disease_label=0)
    assert json.loads(info.to_json())["disease_label"] == 0
    back = DatasetInfo.from_json(info.to_json())
    assert back.disease_label == 0 and back.positive_is_disease is False and back == info


def test_dataset_json_without_the_key_reads_as_label_1_is_the_disease():
    old = json.loads(DatasetInfo("old", {"sex": {0: "F", 1: "M"}}).to_json())
    del old["disease_label"]
    info = DatasetInfo.from_json(json.dumps(old))
    assert info.disease_label == 1 and info.positive_is_disease


@pytest.mark.parametrize("bad", [2, -1, "yes", True, None])
def test_a_disease_label_other_than_0_or_1_is_refused(bad):
    with pytest.raises(DataError, match="disease_label must be 0 or 1"):
        DatasetInfo("x", {}, disease_label=bad)


def test_a_damaged_disease_label_in_dataset_json_is_reported_on_load(tmp_path):
    uri, _ = fx.build_cxr_prepared(tmp_path / "cxr")
    path = tmp_path / "cxr" / "dataset.json"
    path.write_text(path.read_text().replace('"disease_label": 0', '"disease_label": 7'))
    with pytest.raises(DataError, match="dataset.json.*disease_label must be 0 or 1"):
        load_manifest(uri)


def test_the_summary_says_when_the_disease_is_label_0(cxr):
    manifest, info, _ = cxr
    assert "the disease is label 0" in format_summary([], info)
    assert "disease" not in format_summary([], DatasetInfo("x", {}))


# ------------------------------------------------------------------ adapters


@pytest.mark.parametrize("name", sorted(DISEASE_LABEL))
def test_every_adapter_names_its_disease_label(name):
    adapter = get_adapter(name)
    assert adapter.disease_label == DISEASE_LABEL[name]
    if name in DISEASE_NAME:
        assert adapter.label_names[adapter.disease_label] == DISEASE_NAME[name]


def test_every_built_in_adapter_is_checked():
    assert set(DISEASE_LABEL) <= set(ADAPTERS)


def _prepare(name: str, fixture: fx.Fixture, out, **options):
    attributes = ["sex"] if name == "generic" else None  # the generic adapter needs at least one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_dataset(name, fixture.root, str(out), size=16, resize=18, progress=False,
                               options={**fixture.options, **options}, attributes=attributes)


def test_chexpert_records_disease_label_0(tmp_path):
    _prepare("chexpert", fx.build_chexpert(tmp_path / "raw"), tmp_path / "out")
    _, info = load_manifest(str(tmp_path / "out"))
    assert info.disease_label == 0 and info.label_names[1] == "no finding"


def test_ham10000_records_disease_label_1(tmp_path):
    _prepare("ham10000", fx.build_ham10000(tmp_path / "raw"), tmp_path / "out")
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["disease_label"] == 1


@pytest.mark.parametrize("given, recorded", [(None, 1), ("0", 0), ("1", 1), (0, 0)])
def test_generic_disease_label_option(tmp_path, given, recorded):
    options = {} if given is None else {"disease_label": given}
    result = _prepare("generic", fx.build_generic(tmp_path / "raw"), tmp_path / "out", **options)
    assert result.info.disease_label == recorded
    assert load_manifest(str(tmp_path / "out"))[1].disease_label == recorded


@pytest.mark.parametrize("bad", ["2", "healthy", "-1"])
def test_generic_disease_label_option_must_be_0_or_1(tmp_path, bad):
    with pytest.raises(DataError, match=r"generic: option 'disease_label': .*must be 0 or 1"):
        _prepare("generic", fx.build_generic(tmp_path / "raw"), tmp_path / "out", disease_label=bad)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ metrics


def test_underdiagnosis_of_a_no_finding_label_is_the_fpr_gap(cxr):
    manifest, info, scores = cxr
    y, g = manifest["label"].to_numpy(), manifest["sex"].to_numpy()
    met = compute_metrics(y, scores, g, info.attributes["sex"], positive_is_disease=info.positive_is_disease)
    fpr_gap = _rate_gap(y, scores, g, true_label=0)       # sick (0) called healthy (1)
    assert fpr_gap == pytest.approx(0.5) and _rate_gap(y, scores, g, true_label=1) == pytest.approx(0.25)
    assert met["underdiag_gap"] == pytest.approx(fpr_gap)
    assert met["underdiag_gap"] == pytest.approx(met["group/F/fpr"] - met["group/M/fpr"])
    # the same as the FNR gap of the disease, scored as the disease
    flipped = compute_metrics(1 - y, 1 - scores, g, info.attributes["sex"])
    assert flipped["underdiag_gap"] == pytest.approx(met["underdiag_gap"])


def test_the_loop_metrics_read_the_disease_label(cxr, monkeypatch):
    manifest, info, scores = cxr
    split = SplitScores(manifest["label"].to_numpy(), scores, manifest["sex"].to_numpy())
    names = info.attributes["sex"]
    assert split_metrics(split, names, info.positive_is_disease)["underdiag_gap"] == pytest.approx(0.5)
    assert split_metrics(split, names)["underdiag_gap"] == pytest.approx(0.25)   # label 1 as the disease
    # the per-epoch evaluation takes it from the run (set from data.info in _build_run)
    monkeypatch.setattr(loop, "predict", lambda *a: split)
    run = SimpleNamespace(model=None, eval_loaders={"val": None}, transform=None, accelerator=None,
                          group_names=names, positive_is_disease=info.positive_is_disease)
    _, met = loop._evaluate(run, "val")
    assert met["underdiag_gap"] == pytest.approx(0.5)


def test_the_export_evaluation_reads_the_disease_label(cxr):
    manifest, info, scores = cxr
    y, g = manifest["label"].to_numpy(), manifest["sex"].to_numpy()
    result = evaluate_scores(y, scores, g, info.attributes["sex"], n_boot=20,
                             positive_is_disease=info.positive_is_disease)
    assert result["metrics"]["underdiag_gap"] == pytest.approx(0.5) and result["positive_is_disease"] is False
    assert result["intervals"]["underdiag_gap"]["point"] == pytest.approx(0.5)


def test_the_retrain_row_intervals_read_the_disease_label(cxr, monkeypatch):
    from fairtune_ray.search.stages import retrain_test

    class Called(Exception):
        """Stops result_row once the intervals were asked for."""

    manifest, info, scores = cxr
    seen = {}

    def fake_intervals(*args, **kwargs):
        seen.update(kwargs)
        raise Called

    monkeypatch.setattr(retrain_test, "bootstrap_intervals", fake_intervals)
    run = {"labels": manifest["label"].to_numpy(), "groups": manifest["sex"].to_numpy(), "scores": scores}
    with pytest.raises(Called):
        retrain_test.result_row(SimpleNamespace(search=SimpleNamespace(bootstrap=5, seed=0)), None, [run],
                                info.attributes["sex"], positive_is_disease=info.positive_is_disease)
    assert seen["positive_is_disease"] is False


def test_the_model_metadata_records_the_disease_label(cxr):
    from fairtune_ray.export.metadata import data_section

    _, info, _ = cxr
    cfg = SimpleNamespace(data=SimpleNamespace(sensitive_attribute="sex", source="prepared", eval_batch_size=8))
    assert data_section(cfg, info)["disease_label"] == 0
