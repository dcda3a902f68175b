"""Patient-level splits stratified by group x label, missing patient ids, and the coverage checks
that ``data prepare`` and the search preflight run (issue 14, item 6)."""
from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import fixtures_data as fx
import numpy as np
import pandas as pd
import pytest

from fairtune_ray.cli.data import main as data_main
from fairtune_ray.config import SyntheticConfig, load_config
from fairtune_ray.data import manifest as manifest_module
from fairtune_ray.data.adapters import DataWarning
from fairtune_ray.data.manifest import DataError, DatasetInfo, load_manifest
from fairtune_ray.data.prepare import prepare_dataset
from fairtune_ray.data.splits import assign_splits, check_split_coverage, split_coverage_problems
from fairtune_ray.data.synthetic import generate_target
from fairtune_ray.search.preflight import check_data_coverage

STRATA = ["group", "label"]


def _imbalanced(seed: int = 0) -> pd.DataFrame:
    """300 patients: group 1 is a 10% minority with 4 positive patients; some patients have two images."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(300):
        group = int(p >= 270)
        label = int(rng.random() < 0.3) if group == 0 else int(p < 274)
        for _ in range(1 + (p % 5 == 0)):
            rows.append({"patient_id": f"P{p:04d}", "group": group, "label": label})
    return pd.DataFrame(rows)


def _with(df: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    return df.assign(split=split.to_numpy())


def test_stratified_split_measures_every_group_where_the_plain_one_does_not():
    df = _imbalanced()
    plain_fails = [s for s in range(20) if split_coverage_problems(_with(df, assign_splits(df, seed=s)), "group")]
    assert plain_fails, "the unstratified split should lose a class of the minority for some seed"
    for seed in range(20):
        m = _with(df, assign_splits(df, seed=seed, stratify=STRATA))
        assert split_coverage_problems(m, "group") == [], seed
        cells = m.groupby(["split", "group"])["label"].agg(["min", "max"])
        assert (cells.loc[["val", "test"], "min"] == 0).all() and (cells.loc[["val", "test"], "max"] == 1).all()
    # the fractions still hold overall, by patient
    per_patient = _with(df, assign_splits(df, seed=plain_fails[0], stratify=STRATA)).drop_duplicates("patient_id")
    assert per_patient["split"].value_counts().to_dict() == {"train": 240, "val": 30, "test": 30}


def test_every_cell_of_three_units_reaches_val_and_test():
    df = pd.DataFrame({"patient_id": [f"P{i}" for i in range(13)], "group": [0] * 10 + [1] * 3,
                       "label": [0] * 10 + [1] * 3})
    m = _with(df, assign_splits(df, seed=0, stratify=STRATA))
    assert sorted(m.loc[m["group"] == 1, "split"]) == ["test", "train", "val"]


def test_a_patient_never_straddles_splits_and_takes_its_majority_cell():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"patient_id": [f"P{i // 3}" for i in range(600)], "group": rng.integers(0, 3, 600),
                       "label": rng.integers(0, 2, 600)})
    for seed in range(5):
        m = _with(df, assign_splits(df, seed=seed, stratify=STRATA))
        assert (m.groupby("patient_id")["split"].nunique() == 1).all()
        assert m["split"].notna().all()


def test_split_is_deterministic_by_seed():
    df = _imbalanced()
    a = assign_splits(df, seed=3, stratify=STRATA)
    assert a.equals(assign_splits(df, seed=3, stratify=STRATA))
    assert not a.equals(assign_splits(df, seed=4, stratify=STRATA))
    assert a.name == "split" and a.index.equals(df.index)


def _old_assign_splits(df, unit_column="patient_id", fractions=(0.8, 0.1, 0.1), seed=0) -> pd.Series:
    """manifest.assign_splits as it was before stratification, verbatim: the reference for bit-identity."""
    units = np.asarray(sorted(df[unit_column].astype(str).unique()))
    rng = np.random.default_rng(seed)
    rng.shuffle(units)
    n = len(units)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    mapping = {}
    for i, u in enumerate(units):
        mapping[u] = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
    return df[unit_column].astype(str).map(mapping).rename("split")


def test_unstratified_path_is_the_old_split():
    """The embedded synthetic data uses it: its published figures depend on every assignment."""
    units = pd.DataFrame({"patient_id": [f"p{i}" for i in range(10)]})
    assert list(assign_splits(units, seed=0)) == ["train", "test"] + ["train"] * 6 + ["val", "train"]
    assert list(assign_splits(units, seed=7, fractions=(0.6, 0.2, 0.2))) == \
        ["train", "train", "val", "train", "val", "test", "train", "train", "train", "test"]
    df = _imbalanced(5)
    old = getattr(manifest_module, "assign_splits", _old_assign_splits)     # until manifest.py drops its copy
    for seed, fractions in ((0, (0.8, 0.1, 0.1)), (11, (0.6, 0.2, 0.2)), (2, (0.9, 0.1, 0.0))):
        new = assign_splits(df, "patient_id", fractions, seed)
        assert new.equals(_old_assign_splits(df, "patient_id", fractions, seed))
        assert new.equals(old(df, "patient_id", fractions, seed))


def test_missing_patient_ids_are_named_or_dropped():
    df = _imbalanced().head(40).copy()
    df.insert(0, "sample_id", np.arange(100, 140))
    df.loc[[3, 17, 21], "patient_id"] = [np.nan, None, "  "]
    for stratify in (None, STRATA):
        with pytest.raises(DataError, match=r"3 of 40 row\(s\) have no 'patient_id' \(rows \[3, 17, 21\], "
                                            r"sample_id \['103', '117', '121'\]\)"):
            assign_splits(df, stratify=stratify)
        split = assign_splits(df, stratify=stratify, drop_missing=True)
        assert list(split.index[split.isna()]) == [3, 17, 21] and split.drop([3, 17, 21]).notna().all()
    kept = df.drop([3, 17, 21])
    assert assign_splits(df, drop_missing=True).dropna().equals(assign_splits(kept))
    df.loc[5, "patient_id"] = "nan"          # an id stringified from NaN is missing too
    with pytest.raises(DataError, match="4 of 40 row"):
        assign_splits(df)


def _manifest() -> pd.DataFrame:
    """group 0 fine everywhere; group 1 without positives in test; group 2 only in train; no val split."""
    rows = [(0, "train", 0), (0, "train", 1), (1, "train", 1), (2, "train", 1), (2, "train", 0),
            (0, "test", 0), (0, "test", 1), (1, "test", 0), (1, "test", 0)]
    return pd.DataFrame(rows, columns=["sex", "split", "label"])


def test_each_coverage_message_names_split_group_and_counts():
    problems = split_coverage_problems(_manifest(), "sex", mapping={0: "M", 1: "F", 2: "X"})
    assert problems == [
        "split 'val' is empty (0 rows; the whole manifest has 9 rows, 4 positives, 5 negatives)",
        ("split 'test' group sex=1 (F) has only negative labels (2 rows, 0 positives, 2 negatives): its AUC will be "
         "undefined"),
        "split 'test' has no rows of group sex=2 (X) (0 rows, 0 positives, 0 negatives): it cannot be measured there",
    ]
    assert "sex=1 has only negative" in split_coverage_problems(_manifest(), "sex")[1]     # no mapping: code only
    info = DatasetInfo(name="t", attributes={"sex": {0: "M", 1: "F", 2: "X"}})
    for mapping in (info, info.attributes["sex"]):
        with pytest.raises(DataError) as err:
            check_split_coverage(_manifest(), mapping, "sex", where="here", hint="Do this")
        text = str(err.value)
        assert text.startswith("here: the split leaves groups of 'sex' unmeasurable: split 'val' is empty")
        assert all(p in text for p in problems) and text.endswith(". Do this")
    fine = _manifest().assign(split=["train"] * 3 + ["val"] * 2 + ["test"] * 4, label=[0, 1, 1] + [0, 1] + [0, 1] * 2)
    assert split_coverage_problems(fine.assign(sex=[0] * 9), "sex") == []


def test_default_synthetic_data_measures_every_group():
    """Its split stays unstratified (published figures); on the default config it needs no stratifying."""
    manifest, _, info = generate_target(SyntheticConfig())
    for attribute, mapping in info.attributes.items():
        assert split_coverage_problems(manifest, attribute, mapping=mapping) == [], attribute


def test_search_preflight_refuses_an_unmeasurable_group():
    cfg = load_config(None, overrides={"data.source": "/data/x", "data.sensitive_attribute": "sex"})
    data = SimpleNamespace(manifest=_manifest(), info=DatasetInfo(name="t", attributes={"sex": {0: "M", 1: "F", 2: "X"}}))
    with pytest.raises(DataError, match=r"data.source '/data/x': the split leaves groups of 'sex' unmeasurable: "
                                        r"split 'val' is empty .*sex=1 \(F\) has only negative labels \(2 rows, "
                                        r"0 positives, 2 negatives\).*data.sensitive_attribute"):
        check_data_coverage(cfg, data)


# --------------------------------------------------------------------------------------------
# through data prepare


def _ham(tmp_path, n_lesions: int = 40) -> fx.Fixture:
    return fx.build_ham10000(tmp_path / "raw", n_lesions=n_lesions)


def test_data_prepare_ends_with_both_classes_in_every_group_of_val_and_test(tmp_path, capsys):
    fixture = _ham(tmp_path)
    out = tmp_path / "out"
    rc = data_main(["data", "prepare", "ham10000", "--root", str(fixture.root), "--out", str(out), "--attribute", "sex",
                    "--option", "malignant=akiec,mel,bkl", "--size", "16", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    manifest, info = load_manifest(str(out))
    assert split_coverage_problems(manifest, "sex", mapping=info.attributes["sex"]) == []
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    assert info.extra["split"] == "random by lesion, stratified by sex x label, seed 0, fractions [0.8, 0.1, 0.1]"


def _prepare(fixture: fx.Fixture, out, **kw):
    kw.setdefault("size", 16)
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return prepare_dataset(kw.pop("name", "ham10000"), fixture.root, str(out), **kw)


def test_prepare_fails_on_an_empty_split_and_with_require_coverage(tmp_path):
    fixture = _ham(tmp_path, n_lesions=12)
    with pytest.raises(DataError, match=r"split 'test' is empty \(0 rows; the whole manifest has \d+ rows, \d+ positives"):
        _prepare(fixture, tmp_path / "out", attributes=["sex"], split_fractions=(0.9, 0.1, 0.0))
    with pytest.raises(DataError, match=r"groups that val or test cannot measure: split '(val|test)' .*group "
                                        r"sex=\d \((M|F)\).*\(\d+ rows, \d+ positives, \d+ negatives\)"):
        _prepare(fixture, tmp_path / "out", attributes=["sex"], require_coverage=True)
    assert not (tmp_path / "out").exists()
    res = _prepare(fixture, tmp_path / "out", attributes=["sex"])                 # default: warnings with counts
    assert any(" negatives)" in w and ("split 'val'" in w or "split 'test'" in w) for w in res.warnings)


def test_prepare_missing_patient_ids_fail_then_drop_missing_records_them(tmp_path):
    fixture = fx.build_generic(tmp_path / "raw")
    table = pd.read_csv(fixture.root / "labels.csv")
    table.loc[[4, 9], "patient"] = None
    table.to_parquet(fixture.root / "labels.parquet", index=False)
    opts = {**fixture.options, "table": "labels.parquet"}
    with pytest.raises(DataError, match=r"generic: 2 of 19 row\(s\) have no patient_id \(split unit: patient "
                                        r"\(patient_column\) or image\), e.g. \['images/img_004.png', "
                                        r"'images/img_009.png'\].*--drop-missing"):
        _prepare(fixture, tmp_path / "out", name="generic", options=opts, attributes=["sex"])
    res = _prepare(fixture, tmp_path / "out", name="generic", options=opts, attributes=["sex"], drop_missing=True)
    assert not {"images/img_004.png", "images/img_009.png"} & set(res.manifest["image"])
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["extra"]["dropped"]["patient_id_missing"] == {"count": 2, "examples": ["images/img_004.png",
                                                                                       "images/img_009.png"]}
