"""Prepare a real dataset: adapter -> checks -> decoded, resized, packed Parquet shards.

Order matters for the "nothing half-written" rule: everything that can be checked without
decoding pixels (metadata files and columns, label and attribute values, image files present,
splits, group sizes) is checked first (:mod:`fairtune_ray.data.prepare_checks`); then images are
decoded once, in worker processes (:mod:`fairtune_ray.data.decode`), into a private scratch file
next to the output; only when every image decoded (or was dropped with ``drop_missing``) does
:func:`write_packed_dataset` write the output, itself atomically.
Disk: the scratch file holds the decoded pixels uncompressed (N x size x size x 3 bytes).
"""
from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from fairtune_ray.data.adapters import Adapter, AdapterContext, DataWarning, get_adapter
from fairtune_ray.data.adapters.base import DropLog
from fairtune_ray.data.decode import decode_images, to_rgb_array
from fairtune_ray.data.manifest import SPLITS, DataError, DatasetInfo, summarise, validate_manifest, write_packed_dataset
from fairtune_ray.data.prepare_checks import (check_arguments, check_groups, check_output_free, default_resize,
                                              files_exist, is_local)
from fairtune_ray.data.splits import assign_splits, missing_units

__all__ = ["PrepareResult", "build_manifest", "format_summary", "prepare_dataset", "to_rgb_array"]  # + single images


@dataclass
class PrepareResult:
    """What was written: the output location, final manifest, info and the summary rows."""

    out: str
    manifest: pd.DataFrame
    info: DatasetInfo
    summary: list[dict]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Settings:
    """The decoding and writing choices of one ``prepare_dataset`` call."""

    size: int
    resize: int
    workers: int
    drop_missing: bool
    min_group_size: int
    require_coverage: bool
    overwrite: bool
    shard_size: int
    progress: bool


def _emit(notes: list[str], message: str) -> None:
    notes.append(message)
    warnings.warn(message, DataWarning, stacklevel=3)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


# --------------------------------------------------------------------------------------------
# the manifest: every step before decoding


def _load_with_notes(adapter: Adapter, ctx: AdapterContext, notes: list[str]) -> Any:
    """The adapter's result; its DataWarnings are recorded in ``notes``, other warnings pass on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        result = adapter.load(ctx)
    for w in caught:
        if issubclass(w.category, DataWarning):
            _emit(notes, str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def _check_attributes_produced(adapter: Adapter, ctx: AdapterContext, attrs: dict) -> None:
    if not attrs:
        raise DataError(f"{adapter.name}: no sensitive attribute could be produced; choose one with --attribute")
    if ctx.attributes is not None and adapter.name != "generic":
        lost = [a for a in ctx.attributes if a not in attrs]
        if lost:
            raise DataError(f"{adapter.name}: requested attribute(s) {lost} could not be produced")


def _drop_unknown_codes(table: pd.DataFrame, attrs: dict, drops: DropLog, name: str) -> pd.DataFrame:
    """Rows with an unknown attribute value are dropped (and recorded); codes become int64."""
    n_read = len(table)
    for attr in attrs:
        table = drops.drop(table, table[attr].isna(), f"{attr}_unknown")
        table[attr] = table[attr].astype("int64")
    if table.empty:
        raise DataError(f"{name}: no rows left ({n_read} read) after dropping unknown values: "
                        f"{ {k: v['count'] for k, v in drops.records.items()} }")
    table["label"] = table["label"].astype("int64")
    table["patient_id"] = table["patient_id"].astype(str)
    return table


def _apply_split(table: pd.DataFrame, result: Any, adapter: Adapter, ctx: AdapterContext, attrs: dict,
                 drops: DropLog, drop_missing: bool, notes: list[str]) -> tuple[pd.DataFrame, str]:
    """Check the official split, or assign a seeded one by patient, stratified by attributes x label
    so that every group keeps both classes in val and test where it can; returns (table, the rule).

    A row without a patient id cannot be kept with its patient: an error, or dropped with ``drop_missing``.
    """
    if result.split_policy == "official" and "split" in table.columns:
        bad = sorted(set(table["split"].dropna()) - set(SPLITS))
        if bad or table["split"].isna().any():
            raise DataError(f"{adapter.name}: the official split has values {bad or ['<empty>']} outside {list(SPLITS)}")
        return table, "official"
    table = _without_missing_patients(table, adapter, drops, drop_missing, notes)
    strata = [*attrs, "label"]
    table["split"] = assign_splits(table, "patient_id", ctx.fractions, ctx.seed, stratify=strata).to_numpy()
    return table, (f"random by {adapter.unit}, stratified by {' x '.join(strata)}, seed {ctx.seed}, "
                   f"fractions {list(ctx.fractions)}")


def _without_missing_patients(table: pd.DataFrame, adapter: Adapter, drops: DropLog, drop_missing: bool,
                              notes: list[str]) -> pd.DataFrame:
    missing = missing_units(table["patient_id"])
    if not missing.any():
        return table
    shown = list(table.loc[missing, "image"].head(5))
    what = f"{int(missing.sum())} of {len(table)} row(s) have no patient_id (split unit: {adapter.unit}), e.g. {shown}"
    if not drop_missing:
        raise DataError(f"{adapter.name}: {what}: the split cannot keep a unit's rows together (pass --drop-missing "
                        "to drop them; what is dropped is recorded in dataset.json)")
    _emit(notes, f"{adapter.name}: dropped {what}")
    table = drops.drop(table, missing, "patient_id_missing")
    if table.empty:
        raise DataError(f"{adapter.name}: no row has a patient_id (split unit: {adapter.unit})")
    return table


def _check_image_files(table: pd.DataFrame, adapter: Adapter, ctx: AdapterContext, drops: DropLog,
                       drop_missing: bool, notes: list[str]) -> pd.DataFrame:
    """Every image file must exist (checked before any decoding), or is dropped with ``drop_missing``."""
    ok = files_exist([os.path.join(ctx.root, p) for p in table["image"]])
    if ok.all():
        return table
    missing = [table["image"].iloc[i] for i in np.flatnonzero(~ok)]
    if not drop_missing:
        raise DataError(f"{adapter.name}: {len(missing)} of {len(table)} image file(s) are missing under "
                        f"'{ctx.root}', e.g. {missing[:5]} (pass --drop-missing to drop them; "
                        "what is dropped is recorded in dataset.json)")
    table = drops.drop(table, ~ok, "missing_image")
    _emit(notes, f"{adapter.name}: dropped {len(missing)} row(s) whose image file is missing, e.g. {missing[:3]}")
    if table.empty:
        raise DataError(f"{adapter.name}: every image file is missing under '{ctx.root}'")
    return table


def _in_manifest_order(table: pd.DataFrame, attrs: dict) -> pd.DataFrame:
    """sample_id, image, [image_key], label, attributes..., patient_id, split, then the rest as text."""
    first = ["image"] + (["image_key"] if "image_key" in table.columns else []) + ["label"] + list(attrs) + \
        ["patient_id", "split"]
    rest = [c for c in table.columns if c not in first]
    manifest = table[first + rest].reset_index(drop=True)
    manifest.insert(0, "sample_id", np.arange(len(manifest), dtype=np.int64))
    for c in rest:
        if manifest[c].dtype == object:
            manifest[c] = manifest[c].astype(str)
    return manifest


def build_manifest(adapter: Adapter, ctx: AdapterContext, *, drop_missing: bool = False, min_group_size: int = 0,
                   require_coverage: bool = False,
                   notes: Optional[list[str]] = None) -> tuple[pd.DataFrame, DatasetInfo, Callable]:
    """Everything before decoding: adapter, attribute codes, splits, image files, group checks.

    Returns the manifest (sample_id, image, [image_key], label, attributes..., patient_id, split, ...), the
    DatasetInfo and the adapter's image reader. Raises DataError on any problem.
    """
    notes = [] if notes is None else notes
    result = _load_with_notes(adapter, ctx, notes)
    attrs = dict(result.attributes)
    _check_attributes_produced(adapter, ctx, attrs)
    drops = DropLog()
    drops.records.update(result.extra.pop("dropped", {}) or {})
    table = _drop_unknown_codes(result.table.copy(), attrs, drops, adapter.name)
    table, split_rule = _apply_split(table, result, adapter, ctx, attrs, drops, drop_missing, notes)
    table = _check_image_files(table, adapter, ctx, drops, drop_missing, notes)
    manifest = _in_manifest_order(table, attrs)
    info = DatasetInfo(name=adapter.name, attributes=attrs, label_names=dict(result.label_names),
                       disease_label=adapter.disease_label_of(result), source=str(ctx.root))
    info.extra = {"adapter": adapter.name, "options": {k: _jsonable(v) for k, v in ctx.options.items()},
                  "split": split_rule, "split_unit": adapter.unit, **_jsonable(result.extra), "dropped": drops.records}
    validate_manifest(manifest, info, where=f"{adapter.name} manifest")
    for note in check_groups(manifest, attrs, min_group_size, require_coverage):
        _emit(notes, note)
    return manifest, info, result.reader


# --------------------------------------------------------------------------------------------
# decoding and writing


def _image_items(manifest: pd.DataFrame, root: Path) -> list[tuple[str, Optional[str]]]:
    keys = manifest["image_key"] if "image_key" in manifest.columns else [None] * len(manifest)
    return [(os.path.join(root, p), k) for p, k in zip(manifest["image"], keys)]


def _drop_unreadable(name: str, manifest: pd.DataFrame, info: DatasetInfo, failures: list[tuple[int, str]],
                     s: _Settings, notes: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """(manifest without the rows that failed to decode, which rows of the decoded pixels to keep)."""
    keep = np.ones(len(manifest), dtype=bool)
    if not failures:
        return manifest, keep
    shown = [f"{manifest['image'].iloc[i]}{'#' + str(manifest['image_key'].iloc[i]) if 'image_key' in manifest else ''}"
             f" ({err})" for i, err in failures[:5]]
    if not s.drop_missing:
        raise DataError(f"{name}: {len(failures)} of {len(manifest)} image(s) could not be read, "
                        f"e.g. {shown} (pass --drop-missing to drop them; what is dropped is recorded "
                        "in dataset.json)")
    keep[[i for i, _ in failures]] = False
    info.extra["dropped"]["unreadable_image"] = {"count": len(failures), "examples": shown}
    _emit(notes, f"{name}: dropped {len(failures)} unreadable image(s), e.g. {shown[:3]}")
    manifest = manifest[keep].reset_index(drop=True)
    manifest["sample_id"] = np.arange(len(manifest), dtype=np.int64)
    if manifest.empty:
        raise DataError(f"{name}: no image could be read")
    for note in check_groups(manifest, info.attributes, s.min_group_size, s.require_coverage):
        if note not in notes:
            _emit(notes, note)
    return manifest, keep


@contextmanager
def _created_parents(path: str) -> Iterator[None]:
    """mkdir -p ``path`` (when given); the folders it created are removed again if the block fails."""
    created = []
    p = os.path.abspath(path) if path else ""
    while p and not os.path.isdir(p):
        created.append(p)
        p = os.path.dirname(p)
    for d in reversed(created):
        os.mkdir(d)
    try:
        yield
    except BaseException:
        for d in created:           # deepest first
            try:
                os.rmdir(d)
            except OSError:
                pass
        raise


def _decode_and_write(name: str, manifest: pd.DataFrame, info: DatasetInfo, reader: Callable, root: Path,
                      out: str, s: _Settings, notes: list[str]) -> pd.DataFrame:
    """Decode into a scratch memmap beside the output, drop what failed, write; returns the manifest."""
    local, out_path = is_local(out)
    parent = os.path.dirname(out_path) if local else ""
    scratch_dir = parent if local and os.path.isdir(parent) else None
    with tempfile.TemporaryDirectory(prefix=".fairtune-prepare-", dir=scratch_dir, ignore_cleanup_errors=True) as scratch:
        pixels = np.lib.format.open_memmap(os.path.join(scratch, "pixels.npy"), mode="w+", dtype=np.uint8,
                                           shape=(len(manifest), s.size, s.size, 3))
        try:
            failures = decode_images(_image_items(manifest, root), reader, s.size, s.resize, pixels,
                                     workers=s.workers, progress=s.progress)
            manifest, keep = _drop_unreadable(name, manifest, info, failures, s, notes)
            info.extra["warnings"] = list(notes)
            with _created_parents(parent):
                write_packed_dataset(out, manifest, (pixels[i] for i in np.flatnonzero(keep)), info,
                                     shard_size=s.shard_size, overwrite=s.overwrite)
        finally:
            del pixels          # release the memmap before the scratch folder is removed
    return manifest


def prepare_dataset(
    dataset: str | Adapter,
    root: str | os.PathLike,
    out: str,
    *,
    attributes: Optional[Sequence[str]] = None,
    options: Optional[dict[str, Any]] = None,
    size: int = 224,
    resize: Optional[int] = None,
    workers: int = 1,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    drop_missing: bool = False,
    min_group_size: int = 0,
    require_coverage: bool = False,
    overwrite: bool = False,
    shard_size: int = 2048,
    progress: bool = True,
) -> PrepareResult:
    """Turn a dataset in its published layout into a prepared folder (see module docstring).

    ``resize`` (the short side before the centre crop) defaults to ``size * 8 / 7``: 256 for 224.
    An empty split is an error; a group absent from val or test, or lacking a class there, is a
    warning, or an error with ``require_coverage``.
    """
    adapter = get_adapter(dataset) if isinstance(dataset, str) else dataset
    resize = default_resize(size) if resize is None else resize
    check_arguments(size, resize, workers, split_fractions, min_group_size, shard_size)
    out = os.fspath(out)
    check_output_free(out, overwrite)
    root_path = Path(root).expanduser().resolve()
    if not root_path.is_dir():
        raise DataError(f"{adapter.name}: dataset root '{root}' is not a folder")
    ctx = AdapterContext(root=root_path, attributes=list(attributes) if attributes else None,
                         options=dict(options or {}), seed=seed, fractions=tuple(float(f) for f in split_fractions))
    notes: list[str] = []
    manifest, info, reader = build_manifest(adapter, ctx, drop_missing=drop_missing, min_group_size=min_group_size,
                                            require_coverage=require_coverage, notes=notes)
    info.extra["preprocess"] = {"size": size, "resize": resize, "crop": "centre", "channels": 3}
    settings = _Settings(size=size, resize=resize, workers=workers, drop_missing=drop_missing,
                         min_group_size=min_group_size, require_coverage=require_coverage, overwrite=overwrite,
                         shard_size=shard_size, progress=progress)
    manifest = _decode_and_write(adapter.name, manifest, info, reader, root_path, out, settings, notes)
    return PrepareResult(out=out, manifest=manifest, info=info, summary=summarise(manifest, info.attributes),
                         warnings=notes)


def format_summary(summary: list[dict], info: DatasetInfo) -> str:
    """The per split and group counts and label prevalence as an aligned text table."""
    rows = []
    for r in summary:
        attr, group = r["attribute"], r["group"]
        name = "all" if attr == "all" else f"{group} {info.attributes.get(attr, {}).get(int(group), '?')}"
        prev = r["prevalence"]
        rows.append({"split": r["split"], "attribute": attr, "group": name, "count": r["count"],
                     "prevalence": "-" if prev != prev else f"{prev:.3f}"})
    df = pd.DataFrame(rows, columns=["split", "attribute", "group", "count", "prevalence"])
    disease = "" if info.positive_is_disease else "; the disease is label 0"
    return f"label 1 = {info.label_names.get(1, 'positive')}{disease}; prevalence = share of label 1\n" + df.to_string(index=False)
