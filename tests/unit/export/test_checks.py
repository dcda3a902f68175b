"""The export commands' dataset checks name what is wrong, and how to choose, before any image is read."""
import pandas as pd
import pytest

from fairtune_ray.data.manifest import DataError, DatasetInfo
from fairtune_ray.export.checks import check_dataset

META = {"data": {"image_size": 32, "channels": 3}}


def _dataset():
    info = DatasetInfo(name="tiny", attributes={"sex": {0: "F", 1: "M"}, "age": {0: "<60", 1: ">=60"}},
                       image_size=32, channels=3)
    manifest = pd.DataFrame({"sex": [0, 1, 0], "age": [1, 0, 1], "split": ["test", "test", "val"]})
    return info, manifest


def test_an_attribute_the_dataset_does_not_record_names_the_flag_and_those_it_has():
    info, manifest = _dataset()
    with pytest.raises(DataError, match=r"scores.parquet: sensitive attribute 'race' \(choose one with --attribute\) "
                                        r"is not in the manifest; available: \['age', 'sex'\]"):
        check_dataset(META, info, manifest, "scores.parquet", "test", attribute=["sex", "race"])
    rows = check_dataset(META, info, manifest, "scores.parquet", "test", attribute=["sex", "age"])
    assert rows.tolist() == [True, True, False]


def test_a_split_without_rows_and_a_size_mismatch_are_errors():
    info, manifest = _dataset()
    with pytest.raises(DataError, match=r"split 'train' has no rows"):
        check_dataset(META, info, manifest, "d", "train")
    with pytest.raises(DataError, match=r"images are 32x32 px with 3 channel\(s\), but the model takes 64x64"):
        check_dataset({"data": {"image_size": 64, "channels": 3}}, info, manifest, "d", "all")
