"""Prepare a real dataset: adapter -> checks -> decoded, resized, packed Parquet shards.

Order matters for the "nothing half-written" rule: everything that can be checked without
decoding pixels (metadata files and columns, label and attribute values, image files present,
splits, group sizes) is checked first; then images are decoded once, in worker processes, into
a private scratch file next to the output; only when every image decoded (or was dropped with
``drop_missing``) does :func:`write_packed_dataset` write the output, itself atomically.

Decoding: PIL (JPEG draft mode when the image is much larger than needed), grayscale and
palette images become RGB, the short side is resized to ``resize`` and the centre cropped to
``size`` x ``size``. Array images (npz fields, HDF5 slices, MRI volumes) are scaled to uint8 by
their adapter's reader first.

Disk: the scratch file holds the decoded pixels uncompressed (N x size x size x 3 bytes, e.g.
about 150 kB per image at 224) next to the output until the shards are written.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import tempfile
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
from PIL import Image, ImageOps
from tqdm import tqdm

from fairtune_ray.data.adapters import Adapter, AdapterContext, DataWarning, get_adapter
from fairtune_ray.data.adapters.base import DropLog
from fairtune_ray.data.adapters.readers import scale_to_uint8
from fairtune_ray.data.manifest import (SPLITS, DataError, DatasetInfo, _filesystem, assign_splits, summarise,
                                        validate_manifest, write_packed_dataset)


@dataclass
class PrepareResult:
    """What was written: the output location, final manifest, info and the summary rows."""

    out: str
    manifest: pd.DataFrame
    info: DatasetInfo
    summary: list[dict]
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# decoding (runs in worker processes: module-level, picklable)


def to_rgb_array(obj: Any, size: int, resize: int) -> np.ndarray:
    """A reader's output (PIL image or array) -> (size, size, 3) uint8: short side to ``resize``,
    centre crop ``size``."""
    if isinstance(obj, Image.Image):
        img = obj
        if img.format == "JPEG":
            img.draft(None, (resize, resize))      # DCT-domain downscale, never below the target
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            img = Image.fromarray(scale_to_uint8(np.asarray(img, dtype=np.float32)), "L")
    else:
        arr = np.asarray(obj)
        if arr.dtype != np.uint8:
            arr = scale_to_uint8(arr)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim == 2:
            img = Image.fromarray(np.ascontiguousarray(arr), "L")
        elif arr.ndim == 3 and arr.shape[2] in (3, 4):
            img = Image.fromarray(np.ascontiguousarray(arr), "RGB" if arr.shape[2] == 3 else "RGBA")
        else:
            raise ValueError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA", "PA") else img.convert("RGB")
    w, h = img.size
    scale = resize / min(w, h)
    nw, nh = max(resize, round(w * scale)), max(resize, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def decode_one(path: str, key: Optional[str], reader: Callable[..., Any], size: int, resize: int) -> np.ndarray:
    obj = reader(path, key)
    try:
        return to_rgb_array(obj, size, resize)
    finally:
        if isinstance(obj, Image.Image):
            obj.close()


def _decode_chunk(task: tuple) -> tuple[int, np.ndarray, list[tuple[int, str]]]:
    """Decode rows ``start ..`` of the manifest; failures are reported, not raised."""
    start, items, reader, size, resize = task
    out = np.zeros((len(items), size, size, 3), dtype=np.uint8)
    failures = []
    for i, (path, key) in enumerate(items):
        try:
            out[i] = decode_one(path, key, reader, size, resize)
        except Exception as err:  # unreadable, truncated, wrong format...
            failures.append((start + i, f"{type(err).__name__}: {err}"))
    return start, out, failures


def decode_images(items: Sequence[tuple[str, Optional[str]]], reader: Callable[..., Any], size: int, resize: int,
                  pixels: np.ndarray, workers: int = 1, progress: bool = True) -> list[tuple[int, str]]:
    """Decode every item into ``pixels`` (an (N, size, size, 3) array or memmap) with a process
    pool; returns the (row, error) pairs that failed."""
    n = len(items)
    chunk = max(1, min(64, math.ceil(n / max(1, workers * 4))))
    tasks = ((s, list(items[s:s + chunk]), reader, size, resize) for s in range(0, n, chunk))
    failures: list[tuple[int, str]] = []
    bar = tqdm(total=n, desc="decoding images", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1:
            for task in tasks:
                start, arr, fails = _decode_chunk(task)
                pixels[start:start + len(arr)] = arr
                failures += fails
                bar.update(len(arr))
        else:
            ctx = multiprocessing.get_context("spawn")     # no fork of a process holding Arrow threads
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                pending = set()
                try:
                    for task in tasks:
                        pending.add(pool.submit(_decode_chunk, task))
                        if len(pending) >= 2 * workers:   # bounded: results are big
                            done, pending = wait(pending, return_when=FIRST_COMPLETED)
                            for fut in done:
                                start, arr, fails = fut.result()
                                pixels[start:start + len(arr)] = arr
                                failures += fails
                                bar.update(len(arr))
                    for fut in pending:
                        start, arr, fails = fut.result()
                        pixels[start:start + len(arr)] = arr
                        failures += fails
                        bar.update(len(arr))
                except BaseException:
                    for fut in pending:
                        fut.cancel()
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return sorted(failures)


# --------------------------------------------------------------------------------------------
# checks


def check_groups(manifest: pd.DataFrame, attributes: dict[str, dict[int, str]], min_group_size: int) -> list[str]:
    """Raise for groups smaller than ``min_group_size`` in a split; return warnings for groups
    that are absent from a split or lack one class there (their AUC will be undefined)."""
    problems, notes = [], []
    for attr, mapping in attributes.items():
        present = sorted(int(c) for c in manifest[attr].unique())
        for split in SPLITS:
            part = manifest[manifest["split"] == split]
            if part.empty:
                continue
            size = part.groupby(attr)["label"].size()
            pos = part.groupby(attr)["label"].sum()
            for code in present:
                n, k = int(size.get(code, 0)), int(pos.get(code, 0))
                group = f"{attr}={code} ({mapping.get(code, '?')})"
                if n < min_group_size:
                    problems.append(f"split '{split}' group {group}: {n} samples")
                elif n == 0:
                    notes.append(f"split '{split}' has no samples of group {group}")
                elif k == 0 or k == n:
                    notes.append(f"split '{split}' group {group} has only {'negative' if k == 0 else 'positive'} "
                                 f"labels ({n} samples): its AUC will be undefined")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise DataError(f"groups smaller than --min-group-size {min_group_size}: " + "; ".join(problems[:10]) + more
                        + ". Choose other --attribute values, other --split-fractions, or a smaller --min-group-size")
    return notes


def _exists(paths: list[str]) -> np.ndarray:
    if len(paths) < 5000:
        return np.fromiter((os.path.isfile(p) for p in paths), dtype=bool, count=len(paths))
    from concurrent.futures import ThreadPoolExecutor     # stat calls release the GIL (helps on NFS)

    with ThreadPoolExecutor(max_workers=16) as ex:
        return np.fromiter(ex.map(os.path.isfile, paths, chunksize=512), dtype=bool, count=len(paths))


def _check_args(size: int, resize: int, workers: int, fractions: Sequence[float], min_group_size: int,
                shard_size: int) -> None:
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


def default_resize(size: int) -> int:
    """The usual ImageNet-style ratio: short side 256 for a 224 crop."""
    return 256 if size == 224 else int(round(size * 8 / 7))


def _is_local(out: str) -> tuple[bool, str]:
    fs, path = _filesystem(out)
    return isinstance(fs, pafs.LocalFileSystem), path


def _check_out(out: str, overwrite: bool) -> None:
    fs, path = _filesystem(out)
    if fs.get_file_info(path).type != pafs.FileType.NotFound and not overwrite:
        raise DataError(f"output folder '{out}' already exists (pass --overwrite to replace it)")


# --------------------------------------------------------------------------------------------
# the pipeline


def _emit(notes: list[str], message: str) -> None:
    notes.append(message)
    warnings.warn(message, DataWarning, stacklevel=3)


def build_manifest(adapter: Adapter, ctx: AdapterContext, *, drop_missing: bool = False,
                   min_group_size: int = 0, notes: Optional[list[str]] = None) -> tuple[pd.DataFrame, DatasetInfo, Callable]:
    """Everything before decoding: adapter, attribute codes, splits, image files, group checks.

    Returns the manifest (sample_id, image, [image_key], label, attributes..., patient_id, split, ...), the
    DatasetInfo and the adapter's image reader. Raises DataError on any problem.
    """
    notes = [] if notes is None else notes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        result = adapter.load(ctx)
    for w in caught:
        if issubclass(w.category, DataWarning):
            _emit(notes, str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    table = result.table.copy()
    attrs = dict(result.attributes)
    if not attrs:
        raise DataError(f"{adapter.name}: no sensitive attribute could be produced; choose one with --attribute")
    if ctx.attributes is not None and adapter.name != "generic":
        lost = [a for a in ctx.attributes if a not in attrs]
        if lost:
            raise DataError(f"{adapter.name}: requested attribute(s) {lost} could not be produced")
    drops = DropLog()
    drops.records.update(result.extra.pop("dropped", {}) or {})
    n_read = len(table)
    for attr in attrs:
        table = drops.drop(table, table[attr].isna(), f"{attr}_unknown")
        table[attr] = table[attr].astype("int64")
    if table.empty:
        raise DataError(f"{adapter.name}: no rows left ({n_read} read) after dropping unknown values: "
                        f"{ {k: v['count'] for k, v in drops.records.items()} }")
    table["label"] = table["label"].astype("int64")
    table["patient_id"] = table["patient_id"].astype(str)

    if result.split_policy == "official" and "split" in table.columns:
        bad = sorted(set(table["split"].dropna()) - set(SPLITS))
        if bad or table["split"].isna().any():
            raise DataError(f"{adapter.name}: the official split has values {bad or ['<empty>']} outside {list(SPLITS)}")
        split_rule = "official"
    else:
        table["split"] = assign_splits(table, "patient_id", ctx.fractions, ctx.seed).to_numpy()
        split_rule = f"random by {adapter.unit}, seed {ctx.seed}, fractions {list(ctx.fractions)}"

    # image files, checked before any decoding
    paths = [os.path.join(ctx.root, p) for p in table["image"]]
    ok = _exists(paths)
    if not ok.all():
        missing = [table["image"].iloc[i] for i in np.flatnonzero(~ok)]
        if not drop_missing:
            raise DataError(f"{adapter.name}: {len(missing)} of {len(table)} image file(s) are missing under "
                            f"'{ctx.root}', e.g. {missing[:5]} (pass --drop-missing to drop them; "
                            "what is dropped is recorded in dataset.json)")
        table = drops.drop(table, ~ok, "missing_image")
        _emit(notes, f"{adapter.name}: dropped {len(missing)} row(s) whose image file is missing, e.g. {missing[:3]}")
        if table.empty:
            raise DataError(f"{adapter.name}: every image file is missing under '{ctx.root}'")

    first = ["image"] + (["image_key"] if "image_key" in table.columns else []) + ["label"] + list(attrs) + \
        ["patient_id", "split"]
    rest = [c for c in table.columns if c not in first]
    manifest = table[first + rest].reset_index(drop=True)
    manifest.insert(0, "sample_id", np.arange(len(manifest), dtype=np.int64))
    for c in rest:
        if manifest[c].dtype == object:
            manifest[c] = manifest[c].astype(str)
    info = DatasetInfo(name=adapter.name, attributes=attrs, label_names=dict(result.label_names), source=str(ctx.root))
    info.extra = {"adapter": adapter.name, "options": {k: _jsonable(v) for k, v in ctx.options.items()},
                  "split": split_rule, "split_unit": adapter.unit, **_jsonable(result.extra), "dropped": drops.records}
    validate_manifest(manifest, info, where=f"{adapter.name} manifest")
    for split in SPLITS:
        if not (manifest["split"] == split).any():
            _emit(notes, f"{adapter.name}: split '{split}' is empty")
    for note in check_groups(manifest, attrs, min_group_size):
        _emit(notes, note)
    return manifest, info, result.reader


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
    overwrite: bool = False,
    shard_size: int = 2048,
    progress: bool = True,
) -> PrepareResult:
    """Turn a dataset in its published layout into a prepared folder (see module docstring).

    ``resize`` (the short side before the centre crop) defaults to ``size * 8 / 7``: 256 for 224.
    """
    adapter = get_adapter(dataset) if isinstance(dataset, str) else dataset
    resize = default_resize(size) if resize is None else resize
    _check_args(size, resize, workers, split_fractions, min_group_size, shard_size)
    out = os.fspath(out)
    _check_out(out, overwrite)
    root_path = Path(root).expanduser().resolve()
    if not root_path.is_dir():
        raise DataError(f"{adapter.name}: dataset root '{root}' is not a folder")
    ctx = AdapterContext(root=root_path, attributes=list(attributes) if attributes else None,
                         options=dict(options or {}), seed=seed, fractions=tuple(float(f) for f in split_fractions))
    notes: list[str] = []
    manifest, info, reader = build_manifest(adapter, ctx, drop_missing=drop_missing,
                                            min_group_size=min_group_size, notes=notes)
    info.extra["preprocess"] = {"size": size, "resize": resize, "crop": "centre", "channels": 3}

    local, out_path = _is_local(out)
    parent = os.path.dirname(out_path) if local else ""
    scratch = tempfile.mkdtemp(prefix=".fairtune-prepare-", dir=parent if local and os.path.isdir(parent) else None)
    created: list[str] = []
    pixels: Optional[np.ndarray] = None
    try:
        items = [(os.path.join(root_path, p), k) for p, k in zip(
            manifest["image"], manifest["image_key"] if "image_key" in manifest.columns else [None] * len(manifest))]
        pixels = np.lib.format.open_memmap(os.path.join(scratch, "pixels.npy"), mode="w+", dtype=np.uint8,
                                           shape=(len(manifest), size, size, 3))
        failures = decode_images(items, reader, size, resize, pixels, workers=workers, progress=progress)
        keep = np.ones(len(manifest), dtype=bool)
        if failures:
            shown = [f"{manifest['image'].iloc[i]}{'#' + str(manifest['image_key'].iloc[i]) if 'image_key' in manifest else ''}"
                     f" ({err})" for i, err in failures[:5]]
            if not drop_missing:
                raise DataError(f"{adapter.name}: {len(failures)} of {len(manifest)} image(s) could not be read, "
                                f"e.g. {shown} (pass --drop-missing to drop them; what is dropped is recorded "
                                "in dataset.json)")
            keep[[i for i, _ in failures]] = False
            info.extra["dropped"]["unreadable_image"] = {"count": len(failures), "examples": shown}
            _emit(notes, f"{adapter.name}: dropped {len(failures)} unreadable image(s), e.g. {shown[:3]}")
            manifest = manifest[keep].reset_index(drop=True)
            manifest["sample_id"] = np.arange(len(manifest), dtype=np.int64)
            if manifest.empty:
                raise DataError(f"{adapter.name}: no image could be read")
            for note in check_groups(manifest, info.attributes, min_group_size):
                if note not in notes:
                    _emit(notes, note)
        info.extra["warnings"] = list(notes)
        rows = np.flatnonzero(keep)

        def stream() -> Iterator[np.ndarray]:
            for i in rows:
                yield pixels[i]

        if local and parent and not os.path.isdir(parent):
            created = _make_parents(parent)
        write_packed_dataset(out, manifest, stream(), info, shard_size=shard_size, overwrite=overwrite)
    except BaseException:
        for d in reversed(created):
            try:
                os.rmdir(d)
            except OSError:
                pass
        raise
    finally:
        pixels = None          # release the memmap before removing the scratch folder
        shutil.rmtree(scratch, ignore_errors=True)
    return PrepareResult(out=out, manifest=manifest, info=info, summary=summarise(manifest, info.attributes),
                         warnings=notes)


def _make_parents(path: str) -> list[str]:
    """mkdir -p that reports which folders it created (to remove them again on failure)."""
    missing = []
    p = os.path.abspath(path)
    while p and not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        os.mkdir(d)
    return list(reversed(missing))


# --------------------------------------------------------------------------------------------
# reporting


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
    pos = info.label_names.get(1, "positive")
    return f"label 1 = {pos}; prevalence = share of label 1\n" + df.to_string(index=False)
