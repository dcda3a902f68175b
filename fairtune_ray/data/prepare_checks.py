"""The checks ``prepare_dataset`` runs before it decodes a single pixel.

Why separate: each check is cheap and names the flag or the group at fault, so a bad call fails
in seconds, before the (long) decoding and before anything is written.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from fairtune_ray.data.manifest import SPLITS, DataError, filesystem_and_path
from fairtune_ray.data.splits import empty_split_problems, group_problems

__all__ = ["check_arguments", "check_groups", "check_output_free", "default_resize", "files_exist", "is_local"]


def default_resize(size: int) -> int:
    """The usual ImageNet-style ratio: short side 256 for a 224 crop."""
    return 256 if size == 224 else int(round(size * 8 / 7))


def check_arguments(size: int, resize: int, workers: int, fractions: Sequence[float], min_group_size: int,
                    shard_size: int) -> None:
    """Raise DataError naming the command-line flag whose value cannot work."""
    if size < 8:
        raise DataError(f"--size must be at least 8 pixels, got {size}")
    if resize < size:
        raise DataError(f"--resize ({resize}) must be at least --size ({size}): the short side is resized, then "
                        "the centre is cropped")
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"--split-fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    if min_group_size < 0:
        raise DataError(f"--min-group-size must be >= 0, got {min_group_size}")
    if shard_size < 1:
        raise DataError(f"shard size must be at least 1, got {shard_size}")
    if shard_size * size * size * 3 >= 2 ** 31:   # one Arrow binary column holds < 2 GiB
        raise DataError(f"--shard-size {shard_size} at --size {size} exceeds 2 GiB per shard; use at most "
                        f"{(2 ** 31 - 1) // (size * size * 3)}")


def is_local(out: str) -> tuple[bool, str]:
    """(whether ``out`` is on the local file system, its absolute path or the path in its URI)."""
    fs, path = filesystem_and_path(out)
    return isinstance(fs, pafs.LocalFileSystem), path


def check_output_free(out: str, overwrite: bool) -> None:
    fs, path = filesystem_and_path(out)
    if fs.get_file_info(path).type != pafs.FileType.NotFound and not overwrite:
        raise DataError(f"output folder '{out}' already exists (pass --overwrite to replace it)")


def files_exist(paths: list[str]) -> np.ndarray:
    """One bool per path; many paths are stat-ed in threads (stat releases the GIL; helps on NFS)."""
    if len(paths) < 5000:
        return np.fromiter((os.path.isfile(p) for p in paths), dtype=bool, count=len(paths))
    with ThreadPoolExecutor(max_workers=16) as ex:
        return np.fromiter(ex.map(os.path.isfile, paths, chunksize=512), dtype=bool, count=len(paths))


def _too_small(part: pd.DataFrame, split: str, attr: str, mapping: dict[int, str], present: list[int],
               min_group_size: int) -> list[str]:
    """The groups of one attribute with fewer than ``min_group_size`` samples in one split."""
    size = part.groupby(attr)["label"].size()
    return [f"split '{split}' group {attr}={code} ({mapping.get(code, '?')}): {int(size.get(code, 0))} samples"
            for code in present if int(size.get(code, 0)) < min_group_size]


def check_groups(manifest: pd.DataFrame, attributes: dict[str, dict[int, str]], min_group_size: int,
                 require_coverage: bool = False) -> list[str]:
    """Raise for an empty train/val/test split (nothing could be measured), and for groups smaller
    than ``min_group_size`` in a split; return warnings, with their counts, for groups that are
    absent from a split or lack one class there (their AUC will be undefined). With
    ``require_coverage`` those are errors too where they hit val or test, the splits every metric
    is computed on (the search refuses such a split for its ``data.sensitive_attribute``)."""
    empty = empty_split_problems(manifest)
    if empty:
        raise DataError("; ".join(empty) + ". Choose other --split-fractions or --seed, or check the official split")
    problems, notes, unmeasurable = [], [], []
    for attr, mapping in attributes.items():
        present = sorted(int(c) for c in manifest[attr].unique())
        for split in SPLITS:
            part = manifest[manifest["split"] == split]
            problems += _too_small(part, split, attr, mapping, present, min_group_size) if min_group_size else []
            found = group_problems(manifest, attr, split, mapping=mapping)
            (unmeasurable if require_coverage and split != "train" else notes).extend(found)
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise DataError(f"groups smaller than --min-group-size {min_group_size}: " + "; ".join(problems[:10]) + more
                        + ". Choose other --attribute values, other --split-fractions, or a smaller --min-group-size")
    if unmeasurable:
        raise DataError("groups that val or test cannot measure: " + "; ".join(unmeasurable)
                        + ". Choose other --attribute values, --split-fractions or --seed")
    return notes
