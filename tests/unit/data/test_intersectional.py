"""Intersectional groups: ``data.sensitive_attribute`` as a list, the product of the attributes' codes,
with the groups too small to measure merged into "other" or refused (issue 15, item 6)."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from fairtune_ray.cli import main
from fairtune_ray.config import ConfigError, load_config
from fairtune_ray.data.groups import (OTHER, attribute_label, attribute_list, coding_for, group_coding, like_model,
                                      report_small_groups)
from fairtune_ray.data.loading import load_dataset, split_tensors
from fairtune_ray.data.manifest import DataError, DatasetInfo, write_packed_dataset
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.data.synthetic import generate_target
from fairtune_ray.export.capture import capture
from fairtune_ray.export.folder import write_model_folder
from fairtune_ray.export.metadata import model_metadata
from fairtune_ray.models import create_backbone
from fairtune_ray.search.preflight import check_data_coverage
from fairtune_ray.training.spec import TrialSpec

INFO = DatasetInfo("toy", {"sex": {0: "F", 1: "M"}, "age": {0: "<60", 1: ">=60"}, "site": {0: "a", 1: "b", 2: "c"}})


def _manifest(sizes: dict | None = None, n: int = 12) -> pd.DataFrame:
    """``n`` rows (half positive) per sex x age cell and split; ``sizes`` overrides {(sex, age, split): rows}."""
    rows = []
    for split, sex, age in itertools.product(("train", "val", "test"), (0, 1), (0, 1)):
        for i in range((sizes or {}).get((sex, age, split), n)):
            rows.append({"sex": sex, "age": age, "site": 0, "split": split, "label": i % 2,
                         "patient_id": f"{split}{sex}{age}-{i}"})
    return pd.DataFrame(rows)


def test_the_groups_of_two_attributes_are_their_product_named_in_list_order():
    m = _manifest()
    coding = group_coding(m, INFO, ["sex", "age"])
    assert coding.names == {0: "F × <60", 1: "F × >=60", 2: "M × <60", 3: "M × >=60"}
    assert coding.attribute == "sex × age" and coding.small == [] and coding.attributes == ("sex", "age")
    np.testing.assert_array_equal(coding.codes, 2 * m["sex"].to_numpy() + m["age"].to_numpy())
    assert coding.codes.dtype == np.int64
    swapped = group_coding(m, INFO, ["age", "sex"])
    assert swapped.names == {0: "<60 × F", 1: "<60 × M", 2: ">=60 × F", 3: ">=60 × M"}
    assert attribute_label(["sex", "age"]) == "sex × age" and attribute_label("sex") == "sex"
    assert attribute_list("sex") == ["sex"] and attribute_list(("sex", "age")) == ["sex", "age"]


def test_the_product_codes_are_dense_over_the_cells_present_and_deterministic():
    m = _manifest({(1, 0, s): 0 for s in ("train", "val", "test")})      # no M × <60 anywhere
    coding = group_coding(m, INFO, ["sex", "age"])
    assert coding.names == {0: "F × <60", 1: "F × >=60", 2: "M × >=60"}
    shuffled = m.sample(frac=1.0, random_state=3)
    again = group_coding(shuffled, INFO, ["sex", "age"])
    assert again.names == coding.names and again.cells == coding.cells
    np.testing.assert_array_equal(again.codes, coding.codes[shuffled.index.to_numpy()])   # per row, any row order
    np.testing.assert_array_equal(coding.encode(m.iloc[::7]), coding.codes[::7])           # any subset of rows


def test_one_attribute_keeps_its_own_codes_and_names():
    m = _manifest().assign(site=lambda d: np.arange(len(d)) % 2)       # site code 2 ('c') is recorded, not present
    for min_group_size in (0, 5):
        coding = group_coding(m, INFO, "site", min_group_size=min_group_size)
        assert coding.names == INFO.attributes["site"] and coding.small == [] and coding.attribute == "site"
        np.testing.assert_array_equal(coding.codes, m["site"].to_numpy())
        np.testing.assert_array_equal(coding.encode(m), m["site"].to_numpy())
    assert group_coding(m, INFO, ["site"]).names == INFO.attributes["site"]


def test_a_cell_small_in_one_split_is_merged_into_other_coded_last():
    m = _manifest({(1, 1, "val"): 3})                                   # M × >=60: 12 train, 3 val, 12 test
    coding = group_coding(m, INFO, ["sex", "age"], min_group_size=5, policy="merge")
    assert coding.names == {0: "F × <60", 1: "F × >=60", 2: "M × <60", 3: OTHER}
    assert coding.small == [("M × >=60", {"train": 12, "val": 3, "test": 12})] and coding.other == 3
    np.testing.assert_array_equal(coding.codes, 2 * m["sex"].to_numpy() + m["age"].to_numpy())
    m = _manifest({(0, 0, "test"): 2, (1, 1, "train"): 4})             # two small cells, pooled
    coding = group_coding(m, INFO, ["sex", "age"], min_group_size=5)
    assert coding.names == {0: "F × >=60", 1: "M × <60", 2: OTHER}
    assert [name for name, _ in coding.small] == ["F × <60", "M × >=60"]
    expected = np.select([(m.sex == 0) & (m.age == 1), (m.sex == 1) & (m.age == 0)], [0, 1], 2)
    np.testing.assert_array_equal(coding.codes, expected)
    assert coding.cache_key == "sex × age (other: F × <60, M × >=60)"


def test_a_small_group_of_one_attribute_is_merged_too():
    m = _manifest({(1, a, "test"): 1 for a in (0, 1)})                 # M: 2 test rows
    coding = group_coding(m, INFO, "sex", min_group_size=5)
    assert coding.names == {0: "F", 2: OTHER} and coding.small == [("M", {"train": 24, "val": 24, "test": 2})]
    np.testing.assert_array_equal(coding.codes, np.where(m["sex"] == 1, 2, 0))
    assert group_coding(m, INFO, "sex", min_group_size=2).small == []


def test_reject_names_the_small_groups_their_counts_and_the_keys():
    m = _manifest({(1, 1, "val"): 3, (0, 0, "test"): 0})
    with pytest.raises(ConfigError) as err:
        group_coding(m, INFO, ["sex", "age"], min_group_size=5, policy="reject")
    text = str(err.value)
    assert "data.small_groups" in text and "data.min_group_size=5" in text
    assert "F × <60 (train 12, val 12, test 0)" in text and "M × >=60 (train 12, val 3, test 12)" in text


def test_the_merge_warning_lists_the_groups():
    coding = group_coding(_manifest({(1, 1, "val"): 3}), INFO, ["sex", "age"], min_group_size=5)
    said = []
    report_small_groups(coding, said.append)
    assert len(said) == 1 and said[0].startswith("warning: ") and "M × >=60 (train 12, val 3, test 12)" in said[0]
    report_small_groups(group_coding(_manifest(), INFO, ["sex", "age"], min_group_size=5), said.append)
    assert len(said) == 1


@pytest.mark.parametrize("attributes", ["sex", ["sex", "age"], ["age", "sex"]])
def test_a_missing_code_in_any_attribute_is_refused_as_for_one(attributes):
    """A prepared manifest has no missing code (``data prepare`` drops such rows, per attribute, as
    ``<attribute>_unknown``); one written by hand with a NaN is refused, naming the attribute."""
    m = _manifest().astype({"sex": float})
    m.loc[5, "sex"] = np.nan
    with pytest.raises(DataError, match=r"without a code \(NaN\) in \{'sex': 1\}.*rows \[5\]"):
        group_coding(m, INFO, attributes)


def test_unknown_or_repeated_attributes_are_errors():
    with pytest.raises(DataError, match=r"'weight'.*available: \['age', 'sex', 'site'\]"):
        group_coding(_manifest(), INFO, ["sex", "weight"])
    with pytest.raises(DataError, match="different attributes"):
        group_coding(_manifest(), INFO, ["sex", "sex"])


def test_the_config_takes_a_list_and_checks_it():
    cfg = load_config(None, overrides={"data.sensitive_attribute": ["sex", "age_binary"]})
    assert cfg.data.sensitive_attribute == ["sex", "age_binary"]
    assert cfg.data.min_group_size == 5 and cfg.data.small_groups == "merge"
    assert load_config(None, overrides={"data.sensitive_attribute": ["sex"]}).data.sensitive_attribute == "sex"
    for bad, why in (([], "one or more"), (["sex", "sex"], "more than once")):
        with pytest.raises(ConfigError, match=f"data.sensitive_attribute.*{why}"):
            load_config(None, overrides={"data.sensitive_attribute": bad})
    with pytest.raises(ConfigError, match="data.small_groups"):
        load_config(None, overrides={"data.small_groups": "drop"})


def test_evaluation_pools_the_groups_the_model_merged():
    m = _manifest()
    plain = group_coding(m, INFO, ["sex", "age"])
    model = {"0": "F × <60", "1": "F × >=60", "2": "M × <60", "3": OTHER}
    pooled = like_model(m, plain, model)
    assert pooled.names == {0: "F × <60", 1: "F × >=60", 2: "M × <60", 3: OTHER}
    np.testing.assert_array_equal(pooled.codes, plain.codes)
    assert like_model(m, plain, {str(k): v for k, v in plain.names.items()}) is plain


def test_the_synthetic_dataset_split_by_two_attributes(tiny_overrides):
    """The tests' 300-image synthetic data by skin tone x sex: the dark cells have 4 test images each,
    under data.min_group_size 5, so they are pooled into "other"."""
    cfg = load_config(None, overrides={**tiny_overrides, "data.sensitive_attribute": ["skin_tone", "sex"]})
    data = load_dataset(cfg.data)
    kept = itertools.product(("light", "medium"), ("M", "F"))
    assert data.groups.names == {**{i: f"{t} × {s}" for i, (t, s) in enumerate(kept)}, 4: OTHER}
    assert [name for name, _ in data.groups.small] == ["dark × M", "dark × F"]
    assert data.groups.small[0][1]["test"] == 4
    for split in ("train", "val", "test"):
        part = data.manifest[data.manifest["split"] == split]
        groups = split_tensors(data, split, data.groups).groups.numpy()
        expected = np.where(part["skin_tone"] == 2, 4, 2 * part["skin_tone"] + part["sex"])
        np.testing.assert_array_equal(groups, expected)
        np.testing.assert_array_equal(split_tensors(data, split, ["skin_tone", "sex"]).groups.numpy(), groups)
    only = data.only(("train", "val"))                   # what a validation fit gets: the whole dataset's groups
    assert coding_for(cfg.data.sensitive_attribute, only) is data.groups
    check_data_coverage(cfg, data)
    plain = split_tensors(data, "test", "skin_tone").groups.numpy()   # one attribute, by name: its codes
    np.testing.assert_array_equal(plain, data.split("test").manifest["skin_tone"].to_numpy())


def test_the_single_attribute_demo_is_unchanged():
    """The embedded demo's groups: skin_tone codes and names as they were, nothing merged (the
    smallest group, dark, has 51 training images; data.min_group_size is 5)."""
    manifest, _, info = generate_target(load_config(None).data.synthetic)
    cfg = load_config(None)
    coding = group_coding(manifest, info, cfg.data.sensitive_attribute, cfg.data.min_group_size, cfg.data.small_groups)
    assert coding.small == [] and coding.names == info.attributes["skin_tone"]
    np.testing.assert_array_equal(coding.codes, manifest["skin_tone"].to_numpy())


def test_coverage_is_checked_on_the_product_groups():
    m = _manifest({(1, 1, "test"): 6})
    m.loc[(m.sex == 1) & (m.age == 1) & (m.split == "test"), "label"] = 0
    cfg = load_config(None, overrides={"data.source": "/data/x", "data.sensitive_attribute": ["sex", "age"]})
    data = PackedDataset(m, np.zeros((len(m), 2, 2, 3), np.uint8), INFO)
    with pytest.raises(DataError, match=r"groups of 'sex × age' unmeasurable: split 'test' group sex × age=3 "
                                        r"\(M × >=60\) has only negative labels"):
        check_data_coverage(cfg, data)


def test_evaluate_scores_the_groups_the_model_was_selected_on(tmp_path, capsys):
    """model.json records the attribute list and the group names (here with M × >=60 merged into other);
    ``evaluate`` scores those groups, and ``--attribute a,b`` audits another product."""
    m = _manifest({(1, 1, "val"): 3}, n=6).assign(sample_id=lambda d: np.arange(len(d)),
                                                  image=lambda d: [f"{i}.png" for i in range(len(d))])
    images = np.random.default_rng(0).integers(0, 255, (len(m), 32, 32, 3), dtype=np.uint8)
    info = DatasetInfo("toy", INFO.attributes, image_size=32, channels=3)
    write_packed_dataset(str(tmp_path / "ds"), m, iter(images), info)
    cfg = load_config(None, overrides={"data.sensitive_attribute": ["sex", "age"], "data.min_group_size": 4})
    groups = group_coding(m, info, ["sex", "age"], min_group_size=4)
    model = create_backbone(cfg.backbone.model_copy(update={"pretrained": False}), num_classes=1)
    weights = capture(model)
    meta = model_metadata(cfg, TrialSpec(mask="linear"), PackedDataset(m, images, info, groups),
                          preprocess=weights.preprocess, provenance={"method": "toy"}, evidence={})
    assert meta["data"]["sensitive_attribute"] == ["sex", "age"]
    assert meta["data"]["group_names"] == {"0": "F × <60", "1": "F × >=60", "2": "M × <60", "3": OTHER}
    write_model_folder(tmp_path / "run" / "model", weights.weights, meta)
    out = tmp_path / "e.json"
    args = ["evaluate", str(tmp_path / "run"), str(tmp_path / "ds"), "--bootstrap", "2", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["groups"] == ["F × <60", "F × >=60", "M × <60", OTHER] and report["attribute"] == "sex × age"
    assert main([*args, "--attribute", "age,sex"]) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["groups"] == ["<60 × F", "<60 × M", ">=60 × F", ">=60 × M"]
    assert main([*args, "--attribute", "sex,weight"]) == 2
    assert "'weight'" in capsys.readouterr().err
