"""Every validation error names the file, column or value at fault, and leaves nothing behind."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

import fixtures_data as fx
from fairtune_ray.data.adapters import DataWarning
from fairtune_ray.data.manifest import DataError
from fairtune_ray.data.packed import load_packed_dataset
from fairtune_ray.data.prepare import prepare_dataset


def _run(name: str, root: Path, out: Path, **kw):
    kw.setdefault("size", 32)
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return prepare_dataset(name, root, str(out), **kw)


def _nothing_left(parent: Path, out: Path) -> None:
    """No output folder and no scratch or staging folder next to it."""
    assert not out.exists()
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


@pytest.fixture
def ham(tmp_path):
    return fx.build_ham10000(tmp_path / "raw")


def test_missing_metadata_file(tmp_path, ham):
    (ham.root / "HAM10000_metadata.csv").unlink()
    with pytest.raises(DataError, match=r"HAM10000: metadata file 'HAM10000_metadata.csv'.*not found under"):
        _run("ham10000", ham.root, tmp_path / "out")
    _nothing_left(tmp_path, tmp_path / "out")


def test_missing_column_names_file_and_column(tmp_path, ham):
    path = ham.root / "HAM10000_metadata.csv"
    pd.read_csv(path).drop(columns=["dx"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"HAM10000_metadata.csv' lacks column\(s\) \['dx'\]"):
        _run("ham10000", ham.root, tmp_path / "out")
    _nothing_left(tmp_path, tmp_path / "out")


def test_unexpected_label_values_are_listed(tmp_path, ham):
    path = ham.root / "HAM10000_metadata.csv"
    df = pd.read_csv(path)
    df.loc[[0, 3], "dx"] = ["melanoma?", "zzz"]
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"HAM10000_metadata.csv' column 'dx' has unexpected value\(s\) \['melanoma\?', 'zzz'\]"):
        _run("ham10000", ham.root, tmp_path / "out")
    _nothing_left(tmp_path, tmp_path / "out")


def test_unexpected_attribute_values_are_listed(tmp_path, ham):
    path = ham.root / "HAM10000_metadata.csv"
    df = pd.read_csv(path)
    df.loc[2, "sex"] = "X"
    df.loc[4, "age"] = -3
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'sex' has unexpected value\(s\) \['X'\]"):
        _run("ham10000", ham.root, tmp_path / "out")
    with pytest.raises(DataError, match=r"column 'age' has age value\(s\) outside 0-120: \[-3.0\]"):
        _run("ham10000", ham.root, tmp_path / "out", attributes=["age_binary"])
    _nothing_left(tmp_path, tmp_path / "out")


def test_unknown_attribute_name(tmp_path, ham):
    with pytest.raises(DataError, match=r"unknown sensitive attribute\(s\) \['race'\]; this dataset offers"):
        _run("ham10000", ham.root, tmp_path / "out", attributes=["race"])


def test_missing_images_fail_then_drop_missing_records_them(tmp_path, ham):
    gone = sorted(ham.expected.index)[:2]
    for rel in gone:
        (ham.root / rel).unlink()
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"2 of \d+ image file\(s\) are missing under .*" + gone[0].replace(".", r"\.")):
        _run("ham10000", ham.root, out)
    _nothing_left(tmp_path, out)
    res = _run("ham10000", ham.root, out, drop_missing=True)
    info = json.loads((out / "dataset.json").read_text())
    rec = info["extra"]["dropped"]["missing_image"]
    assert rec["count"] == 2 and set(rec["examples"]) == set(gone)
    assert not set(gone) & set(res.manifest["image"])
    assert len(load_packed_dataset(str(out)).manifest) == len(ham.expected) - 2


def test_unreadable_images_fail_then_drop(tmp_path, ham):
    bad = sorted(ham.expected.index)[0]
    (ham.root / bad).write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"1 of \d+ image\(s\) could not be read, e\.g\. \['" + bad.replace(".", r"\.")):
        _run("ham10000", ham.root, out)
    _nothing_left(tmp_path, out)
    _run("ham10000", ham.root, out, drop_missing=True)
    info = json.loads((out / "dataset.json").read_text())
    assert info["extra"]["dropped"]["unreadable_image"]["count"] == 1
    m = load_packed_dataset(str(out)).manifest
    assert bad not in set(m["image"]) and list(m["sample_id"]) == list(range(len(m)))


def test_group_smaller_than_min_group_size(tmp_path, ham):
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"groups smaller than --min-group-size 3: split '(val|test)' group sex=\d \((M|F)\): \d samples"):
        _run("ham10000", ham.root, out, attributes=["sex"], min_group_size=3)
    _nothing_left(tmp_path, out)


def test_group_lacking_a_class_is_a_warning(tmp_path, ham):
    out = tmp_path / "out"
    with pytest.warns(DataWarning, match=r"split '\w+' group sex=\d \((M|F)\) has only (negative|positive) labels .*AUC will be undefined"):
        res = prepare_dataset("ham10000", ham.root, str(out), attributes=["sex"], size=32, progress=False)
    assert any("AUC will be undefined" in w for w in res.warnings)
    info = json.loads((out / "dataset.json").read_text())
    assert info["extra"]["warnings"] == res.warnings


def test_existing_output_refused_before_any_work_and_overwrite_replaces(tmp_path, ham):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="already exists"):
        _run("ham10000", ham.root, out)
    assert (out / "keep.txt").exists()
    _run("ham10000", ham.root, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.parquet").exists()


def test_failure_after_decoding_leaves_no_parent_or_scratch(tmp_path, ham):
    """The output's parent folders are created late and removed again when writing fails."""
    ham_meta = ham.root / "HAM10000_metadata.csv"
    df = pd.read_csv(ham_meta)
    df.loc[0, "image_id"] = "ISIC_9999999"      # a missing image: fails after the metadata checks
    df.to_csv(ham_meta, index=False)
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(DataError, match="ISIC_9999999"):
        _run("ham10000", ham.root, out)
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_arguments(tmp_path, ham):
    with pytest.raises(DataError, match=r"--resize \(30\) must be at least --size \(32\)"):
        _run("ham10000", ham.root, tmp_path / "out", resize=30)
    with pytest.raises(DataError, match="--split-fractions must be three non-negative numbers summing to 1"):
        _run("ham10000", ham.root, tmp_path / "out", split_fractions=(0.5, 0.1, 0.1))
    with pytest.raises(DataError, match="unknown option 'nope'"):
        _run("ham10000", ham.root, tmp_path / "out", options={"nope": "1"})
    with pytest.raises(DataError, match="is not a folder"):
        _run("ham10000", tmp_path / "absent", tmp_path / "out")


def test_papila_xlsx_without_openpyxl_says_what_to_do(tmp_path):
    pytest.importorskip("pandas")
    try:
        import openpyxl  # noqa: F401
        pytest.skip("openpyxl is installed: the xlsx is read directly")
    except ImportError:
        pass
    fixture = fx.build_papila(tmp_path / "raw", n_patients=4)
    clinical = fixture.root / "PapilaDB" / "ClinicalData"
    for eye in ("od", "os"):
        (clinical / f"patient_data_{eye}.csv").rename(clinical / f"patient_data_{eye}.xlsx")
    with pytest.raises(DataError, match=r"patient_data_od.xlsx' needs the 'openpyxl' package.*export the sheet to CSV"
                                        r".*'patient_data_od.csv'"):
        _run("papila", fixture.root, tmp_path / "out")
    _nothing_left(tmp_path, tmp_path / "out")


def test_generic_errors_name_column_and_values(tmp_path):
    fixture = fx.build_generic(tmp_path / "raw")
    opts = dict(fixture.options)
    with pytest.raises(DataError, match=r"label column 'dx' has value\(s\) \['akiec', 'bcc', 'mel', 'nv'\] that are "
                                        r"not 0/1; give an expression instead"):
        _run("generic", fixture.root, tmp_path / "out", options={**opts, "label": "dx"}, attributes=["sex"])
    with pytest.raises(DataError, match=r"lacks column\(s\) \['ethnicity'\]"):
        _run("generic", fixture.root, tmp_path / "out", options=opts, attributes=["ethnicity"])
    with pytest.raises(DataError, match="at least one sensitive attribute"):
        _run("generic", fixture.root, tmp_path / "out", options=opts)
    with pytest.raises(DataError, match=r"column 'age' \(attribute 'age_bin', binned\) has non-numeric value\(s\) \['old'\]"):
        df = pd.read_csv(fixture.root / "labels.csv")
        df["age"] = df["age"].astype(object)
        df.loc[1, "age"] = "old"
        df.to_csv(fixture.root / "labels.csv", index=False)
        _run("generic", fixture.root, tmp_path / "out", options=opts, attributes=["age_bin=age:60"])
    _nothing_left(tmp_path, tmp_path / "out")


def test_official_split_leak_is_reported(tmp_path):
    fixture = fx.build_generic(tmp_path / "raw")
    df = pd.read_csv(fixture.root / "labels.csv")
    df["split"] = ["train", "test"] * (len(df) // 2)     # both images of patient P0 in different splits
    df.to_csv(fixture.root / "labels.csv", index=False)
    with pytest.raises(DataError, match="patients in more than one split"):
        _run("generic", fixture.root, tmp_path / "out", options={**fixture.options, "split_column": "split"},
             attributes=["sex"])
