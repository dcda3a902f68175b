"""Does a prepared dataset fit an exported model? Checked on dataset.json and the manifest alone,
before any image is read or the model is built, so bad input fails in a second with a message
naming the file, the attribute, the split or the size at fault."""
from __future__ import annotations

from typing import Sequence, Union

import pandas as pd

from fairtune_ray.data.groups import attribute_list, require_attributes
from fairtune_ray.data.manifest import SPLITS, DataError, DatasetInfo

ALL_SPLITS = "all"


def check_input_size(meta: dict, info: DatasetInfo, where: str) -> None:
    """The dataset's packed images must have the size and channels the model was trained on."""
    want = (int(meta["data"]["image_size"]), int(meta["data"]["channels"]))
    have = (int(info.image_size), int(info.channels))
    if want != have:
        raise DataError(f"{where}: images are {have[0]}x{have[0]} px with {have[1]} channel(s), but the model "
                        f"takes {want[0]}x{want[0]} px with {want[1]} channel(s) (model.json data.image_size, "
                        f"data.channels); prepare the dataset at that size (fairtune-ray data prepare --size {want[0]})")


def check_attribute(info: DatasetInfo, manifest: pd.DataFrame, attribute: Union[str, Sequence[str]], where: str) -> None:
    """Each of the sensitive attribute(s) must be one the dataset records."""
    require_attributes(info, manifest.columns, attribute_list(attribute), where, how_to_choose="choose one with --attribute")


def split_rows(manifest: pd.DataFrame, split: str, where: str) -> pd.Series:
    """A boolean row mask of ``split`` (``all``: every row); a split without rows is an error."""
    if split == ALL_SPLITS:
        rows = pd.Series(True, index=manifest.index)
    elif split in SPLITS:
        rows = manifest["split"] == split
    else:
        raise DataError(f"unknown split '{split}': use one of {', '.join(SPLITS)} or {ALL_SPLITS}")
    if not rows.any():
        counts = manifest["split"].value_counts().to_dict()
        raise DataError(f"{where}: split '{split}' has no rows (rows per split: {counts})")
    return rows


def check_dataset(meta: dict, info: DatasetInfo, manifest: pd.DataFrame, where: str, split: str,
                  attribute: Union[str, Sequence[str], None] = None) -> pd.Series:
    """Every check a scoring command needs; returns the split's row mask."""
    check_input_size(meta, info, where)
    if attribute is not None:
        check_attribute(info, manifest, attribute, where)
    return split_rows(manifest, split, where)
