"""Each adapter on a tiny copy of its dataset in the published layout: labels, attribute codes,
patient-level splits, and packed images that decode to the right shape."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import fixtures_data as fx
import numpy as np
import pandas as pd
import pytest
from paths import REPO

from fairtune_ray.data.adapters import ADAPTERS, get_adapter
from fairtune_ray.data.adapters.columns import AGE_5, AGE_BINARY, SEX
from fairtune_ray.data.manifest import DataError, DatasetInfo
from fairtune_ray.data.packed import load_packed_dataset
from fairtune_ray.data.prepare import prepare_dataset

SIZE = 32


def _prepare(name: str, fixture: fx.Fixture, out: Path, **kw):
    opts = {**fixture.options, **kw.pop("options", {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_dataset(name, fixture.root, str(out), size=SIZE, resize=36, workers=kw.pop("workers", 1),
                               options=opts, progress=False, **kw)


def _check(result, fixture: fx.Fixture, out: Path, attrs: list[str]) -> pd.DataFrame:
    data = load_packed_dataset(str(out))
    m = data.manifest
    assert data.images.shape == (len(m), SIZE, SIZE, 3) and data.images.dtype == np.uint8
    assert data.info.image_size == SIZE and data.info.channels == 3
    assert set(data.info.attributes) == set(attrs)
    # exactly the expected rows, with the expected label and codes
    exp = fixture.expected
    assert sorted(m["image"]) == sorted(exp.index)
    got = m.set_index("image").loc[exp.index]
    assert (got["label"].to_numpy() == exp["label"].to_numpy()).all()
    for a in attrs:
        assert (got[a].to_numpy() == exp[a].to_numpy()).all(), a
    assert (got["patient_id"].astype(str).to_numpy() == exp["patient_id"].astype(str).to_numpy()).all()
    # no patient in two splits, every split a known name
    assert (m.groupby("patient_id")["split"].nunique() == 1).all()
    assert set(m["split"]) <= {"train", "val", "test"}
    # summary.json next to the manifest, and the code mappings in dataset.json
    summary = json.loads((out / "summary.json").read_text())
    assert {r["split"] for r in summary} == {"train", "val", "test"}
    info = DatasetInfo.from_json((out / "dataset.json").read_text())
    assert info.name == result.info.name
    return m


def test_registry_lists_every_dataset():
    assert set(ADAPTERS) == {"ham10000", "fitzpatrick17k", "papila", "chexpert", "mimic-cxr", "ol3i",
                             "harvard-gf", "oasis-1", "generic"}
    assert get_adapter("MIMIC_CXR").name == "mimic-cxr" and get_adapter("oasis1").name == "oasis-1"
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        get_adapter("nope")
    for cls in ADAPTERS.values():
        assert cls.__module__ and (cls.__doc__ or "").strip()
        assert (__import__(cls.__module__, fromlist=["x"]).__doc__ or "").count("\n") > 3   # documents its files


def test_ham10000(tmp_path):
    fixture = fx.build_ham10000(tmp_path / "raw")
    out = tmp_path / "out"
    res = _prepare("ham10000", fixture, out, seed=3)
    m = _check(res, fixture, out, ["sex", "age_binary", "age_5"])
    assert res.info.attributes["sex"] == SEX and res.info.attributes["age_5"] == AGE_5
    assert res.info.attributes["age_binary"] == AGE_BINARY
    assert res.info.label_names[1] == "malignant"
    # split by lesion: the two images of one lesion share a split
    assert m.groupby("patient_id").size().max() == 2
    dropped = res.info.extra["dropped"]
    assert dropped["sex_unknown"]["count"] == 1 and dropped["age_binary_unknown"]["count"] == 1


def test_ham10000_attribute_selection_keeps_rows_unknown_elsewhere(tmp_path):
    fixture = fx.build_ham10000(tmp_path / "raw")
    res = _prepare("ham10000", fixture, tmp_path / "out", attributes=["age_binary"])
    assert list(res.info.attributes) == ["age_binary"]
    assert "sex" not in res.manifest.columns
    assert len(res.manifest) == len(fixture.expected) + 1          # the unknown-sex image is kept


def test_fitzpatrick17k(tmp_path):
    fixture = fx.build_fitzpatrick17k(tmp_path / "raw")
    out = tmp_path / "out"
    res = _prepare("fitzpatrick17k", fixture, out)
    _check(res, fixture, out, ["skin_type_binary", "skin_type"])
    assert res.info.attributes["skin_type_binary"] == {0: "I-III", 1: "IV-VI"}
    assert res.info.attributes["skin_type"][5] == "VI"


def test_papila_csv_export_with_title_row(tmp_path):
    fixture = fx.build_papila(tmp_path / "raw")
    out = tmp_path / "out"
    res = _prepare("papila", fixture, out)
    m = _check(res, fixture, out, ["sex", "age_binary", "age_5"])
    assert res.info.extra["dropped"]["diagnosis_suspect"]["count"] == 4
    # both eyes of a patient stay in one split
    assert (m.groupby("patient_id")["split"].nunique() == 1).all() and m.groupby("patient_id").size().max() == 2


def test_chexpert_official_split_and_race(tmp_path):
    fixture = fx.build_chexpert(tmp_path / "raw")
    out = tmp_path / "out"
    res = _prepare("chexpert", fixture, out)
    m = _check(res, fixture, out, ["sex", "age_binary", "age_5", "race"])
    exp = fixture.expected
    test_rows = set(m.loc[m["split"] == "test", "image"])
    assert test_rows == set(exp.index[exp["official"] == "test"])            # valid.csv -> test
    assert set(m.loc[m["split"] != "test", "split"]) == {"train", "val"}
    assert res.info.attributes["race"] == {0: "White", 1: "Black", 2: "Asian", 3: "Other"}
    assert res.info.extra["dropped"]["lateral_view"]["count"] == 4
    assert res.info.extra["dropped"]["no_finding_uncertain"]["count"] >= 1
    # grayscale radiographs become 3 identical channels
    img = load_packed_dataset(str(out)).images[0]
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_chexpert_without_demographics_skips_race_unless_asked(tmp_path):
    fixture = fx.build_chexpert(tmp_path / "raw")
    (fixture.root / "CHEXPERT DEMO.csv").unlink()
    with pytest.warns(UserWarning, match="CHEXPERT DEMO"):
        res = prepare_dataset("chexpert", fixture.root, str(tmp_path / "out"), size=SIZE, progress=False)
    assert "race" not in res.info.attributes and "sex" in res.info.attributes
    with pytest.raises(DataError, match="CHEXPERT DEMO.xlsx"):
        prepare_dataset("chexpert", fixture.root, str(tmp_path / "out2"), attributes=["race"], size=SIZE,
                        progress=False)
    assert not (tmp_path / "out2").exists()


def test_mimic_cxr(tmp_path):
    fixture = fx.build_mimic_cxr(tmp_path / "raw")
    out = tmp_path / "out"
    res = _prepare("mimic-cxr", fixture, out)
    m = _check(res, fixture, out, ["sex", "age_binary", "age_5", "race"])
    got = m.set_index("image").loc[fixture.expected.index, "split"]
    assert (got.to_numpy() == fixture.expected["split"].to_numpy()).all()         # the official split file
    assert res.info.extra["race_conflicting_patients"] == 1
    assert res.info.attributes["race"][3] == "Hispanic/Latino"


def test_ol3i_exported_slices(tmp_path):
    fixture = fx.build_ol3i(tmp_path / "raw")
    out = tmp_path / "out"
    res = _prepare("ol3i", fixture, out)
    m = _check(res, fixture, out, ["sex", "age_binary", "age_5"])
    got = m.set_index("image").loc[fixture.expected.index, "split"]
    assert (got.to_numpy() == fixture.expected["split"].to_numpy()).all()
    assert res.info.extra["dropped"]["label_1y_missing"]["count"] == 1


def test_ol3i_numeric_sex_needs_codes(tmp_path):
    fixture = fx.build_ol3i(tmp_path / "raw", numeric_sex=True)
    with pytest.raises(DataError, match=r"column 'sex'.*sex_codes=0=M,1=F"):
        _prepare("ol3i", fixture, tmp_path / "out")
    res = _prepare("ol3i", fixture, tmp_path / "out", options={"sex_codes": "0=M,1=F"})
    got = res.manifest.set_index("image").loc[fixture.expected.index, "sex"]
    assert (got.to_numpy() == fixture.expected["sex"].to_numpy()).all()


def test_harvard_gf_npz_and_folders(tmp_path):
    fixture = fx.build_harvard_gf(tmp_path / "raw")
    out = tmp_path / "out"
    res = _prepare("harvard-gf", fixture, out)
    m = _check(res, fixture, out, ["race", "sex", "age_binary", "age_5"])
    got = m.set_index("image").loc[fixture.expected.index, "split"]
    assert (got.to_numpy() == fixture.expected["split"].to_numpy()).all()         # Training/Validation/Test
    assert res.info.attributes["race"] == {0: "Asian", 1: "Black", 2: "White"}


def test_harvard_gf_race_as_text(tmp_path):
    fixture = fx.build_harvard_gf(tmp_path / "raw", counts=(6, 3, 3), race_as_text=True)
    res = _prepare("harvard-gf", fixture, tmp_path / "out", attributes=["race"])
    got = res.manifest.set_index("image").loc[fixture.expected.index, "race"]
    assert (got.to_numpy() == fixture.expected["race"].to_numpy()).all()


def test_harvard_gf_refuses_pickled_fields_without_the_option(tmp_path):
    """Text stored as an object array needs unpickling, which runs code from a downloaded file."""
    fixture = fx.build_harvard_gf(tmp_path / "raw", counts=(6, 3, 3), pickled_text=True)
    with pytest.raises(DataError, match=r"data_0001\.npz.*pickled.*--option allow_pickle=true"):
        _prepare("harvard-gf", fixture, tmp_path / "out", attributes=["race"])
    assert not (tmp_path / "out").exists()


def test_harvard_gf_reads_pickled_fields_with_the_option(tmp_path):
    fixture = fx.build_harvard_gf(tmp_path / "raw", counts=(6, 3, 3), pickled_text=True)
    res = _prepare("harvard-gf", fixture, tmp_path / "out", attributes=["race"], options={"allow_pickle": "true"})
    got = res.manifest.set_index("image").loc[fixture.expected.index, "race"]
    assert (got.to_numpy() == fixture.expected["race"].to_numpy()).all()


def test_oasis1_analyze_volumes(tmp_path):
    fixture = fx.build_oasis1(tmp_path / "raw")
    out = tmp_path / "out"
    res = _prepare("oasis-1", fixture, out)
    _check(res, fixture, out, ["sex", "age_binary", "age_5"])
    assert res.info.extra["dropped"]["reliability_rescan"]["count"] == 1
    assert res.info.extra["image"] == {"source": "volume", "volume": "t88_masked_gfc", "plane": "axial", "index": 12}


def test_oasis1_slice_out_of_range_is_reported(tmp_path):
    fixture = fx.build_oasis1(tmp_path / "raw", n=8)
    with pytest.raises(DataError, match=r"could not be read.*slice 90 is outside"):
        _prepare("oasis-1", fixture, tmp_path / "out", options={"slice": "90"})
    assert not (tmp_path / "out").exists()


def test_generic_expression_and_binning(tmp_path):
    fixture = fx.build_generic(tmp_path / "raw")
    out = tmp_path / "out"
    res = _prepare("generic", fixture, out, attributes=["sex", "age_binary=age:60"])
    _check(res, fixture, out, ["sex", "age_binary"])
    assert res.info.attributes == {"sex": {0: "female", 1: "male"}, "age_binary": {0: "<60", 1: ">=60"}}


def test_generic_multi_bin_names():
    from fairtune_ray.data.adapters.generic import bin_names, parse_attribute_spec

    assert parse_attribute_spec("age_5=age:20,40,60,80") == ("age_5", "age", [20.0, 40.0, 60.0, 80.0])
    assert bin_names([20, 40, 60, 80]) == {0: "<20", 1: "20-40", 2: "40-60", 3: "60-80", 4: ">=80"}


def test_worker_pool_matches_single_process(tmp_path):
    fixture = fx.build_ham10000(tmp_path / "raw")
    a = _prepare("ham10000", fixture, tmp_path / "a", workers=1)
    b = _prepare("ham10000", fixture, tmp_path / "b", workers=2)
    da, db = load_packed_dataset(str(tmp_path / "a")), load_packed_dataset(str(tmp_path / "b"))
    assert (da.manifest["image"] == db.manifest["image"]).all()
    assert np.array_equal(da.images, db.images)
    assert len(a.manifest) == len(b.manifest)


def test_load_from_file_uri(tmp_path):
    fixture = fx.build_fitzpatrick17k(tmp_path / "raw", n=8)
    out = tmp_path / "out"
    _prepare("fitzpatrick17k", fixture, out)
    local = load_packed_dataset(str(out))
    remote = load_packed_dataset(out.resolve().as_uri())
    assert remote.images.shape == local.images.shape and np.array_equal(remote.images, local.images)
    assert remote.manifest.equals(local.manifest)


def test_cli_standalone_and_register(tmp_path, capsys):
    import argparse

    from fairtune_ray.cli import data as cli_prepare

    fixture = fx.build_ham10000(tmp_path / "raw")
    out = tmp_path / "prepared" / "ham"
    rc = cli_prepare.main(["ham10000", "--root", str(fixture.root), "--out", str(out), "--size", "32",
                           "--resize", "40", "--workers", "1", "--seed", "1", "--split-fractions", "0.6", "0.2", "0.2",
                           "--attribute", "sex", "age_binary", "--no-progress"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "prevalence" in printed.out and "0 M" in printed.out and "1 >=60" in printed.out
    assert load_packed_dataset(str(out)).images.shape[1:] == (32, 32, 3)
    # the same folder again: refused, then replaced with --overwrite
    rc = cli_prepare.main(["data", "prepare", "ham10000", "--root", str(fixture.root), "--out", str(out),
                           "--size", "32", "--no-progress"])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    parser = argparse.ArgumentParser(prog="fairtune-ray")
    cli_prepare.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "prepare", "ham10000", "--root", str(fixture.root), "--out", str(out),
                              "--size", "32", "--overwrite", "--no-progress", "--option", "malignant=mel"])
    assert args.func(args) == 0
    m = load_packed_dataset(str(out)).manifest
    assert set(m.loc[m["label"] == 1, "dx"]) == {"mel"}


def test_experiment_configs_load():
    pytest.importorskip("fairtune_ray.metrics.objectives")
    from fairtune_ray.config import load_config

    files = sorted((REPO / "experiments").glob("*.yaml"))
    for f in files:                      # every experiment file validates
        load_config(f)
    names = {f.stem: f for f in files}
    datasets = {"ham10000": "ham10000", "fitzpatrick17k": "fitzpatrick17k", "papila": "papila",
                "chexpert": "chexpert", "mimic_cxr": "mimic-cxr", "ol3i": "ol3i", "harvard_gf": "harvard-gf",
                "oasis1": "oasis-1"}
    wanted = ["ham10000_sex", "ham10000_age", "fitzpatrick17k_skin_type", "papila_sex", "papila_age",
              "chexpert_sex", "chexpert_age", "chexpert_race", "mimic_cxr_sex", "mimic_cxr_age",
              "mimic_cxr_race", "ol3i_sex", "ol3i_age", "harvard_gf_race", "oasis1_sex", "oasis1_age"]
    for stem in wanted:
        assert stem in names, stem
        cfg = load_config(names[stem])
        adapter = ADAPTERS[datasets[stem.rsplit("_", 1)[0].removesuffix("_skin")]]
        assert cfg.backbone.pretrained and cfg.data.source.startswith("data/"), stem
        # the attribute is one the dataset's adapter produces
        assert cfg.data.sensitive_attribute in adapter.attributes, stem


def test_oasis1_gif_snapshots_when_no_volumes(tmp_path):
    fixture = fx.build_oasis1(tmp_path / "raw", n=8)
    for img in list(fixture.root.rglob("*.img")):
        fx.write_image(img.with_name(img.name.replace(".img", "_tra_90.gif")), 1, mode="L")
        img.unlink()
        img.with_suffix(".hdr").unlink()
    res = _prepare("oasis-1", fixture, tmp_path / "out", options={"slice": "90"})
    assert res.info.extra["image"]["source"] == "gif"
    assert all(p.endswith("_tra_90.gif") for p in res.manifest["image"])
    assert load_packed_dataset(str(tmp_path / "out")).images.shape[1:] == (SIZE, SIZE, 3)


def test_decoding_formats(tmp_path):
    from PIL import Image

    from fairtune_ray.data.prepare import to_rgb_array

    big = tmp_path / "big.jpg"
    fx.write_image(big, 0, size=(1200, 900))
    assert to_rgb_array(Image.open(big), 32, 36).shape == (32, 32, 3)          # JPEG draft path
    sixteen = tmp_path / "x16.png"
    Image.fromarray((np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 30)).save(sixteen)
    out = to_rgb_array(Image.open(sixteen), 32, 32)
    assert out.shape == (32, 32, 3) and out.max() > 200                        # 16-bit scaled, not clipped
    rgba = np.zeros((40, 48, 4), np.uint8)
    assert to_rgb_array(rgba, 32, 36).shape == (32, 32, 3)
    assert to_rgb_array(np.random.default_rng(0).normal(size=(50, 30)), 16, 20).shape == (16, 16, 3)
