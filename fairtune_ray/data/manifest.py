"""The normalised dataset format every adapter writes and every trial reads.

A prepared dataset is a folder (local path or any pyarrow filesystem URI such as ``s3://``)::

    dataset.json                 name, label names, sensitive-attribute code mappings, image size
    manifest.parquet             one row per image: sample_id, image (source path), label,
                                 one int column per sensitive attribute, patient_id, split, shard
    shards/part-00000.parquet    packed pixels: sample_id, image (uint8 H*W*C bytes), height, width, channels
    summary.json                 counts and label prevalence per split and group

Images are decoded once and stored as raw uint8 so trials never decode JPEGs again.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("sample_id", "image", "label", "patient_id", "split")
MANIFEST_FILE = "manifest.parquet"
INFO_FILE = "dataset.json"
SUMMARY_FILE = "summary.json"
SHARD_DIR = "shards"


class DataError(ValueError):
    """Bad dataset input; the message names the file, column or value at fault."""


@dataclass
class DatasetInfo:
    """What a manifest's integer codes mean."""

    name: str
    attributes: dict[str, dict[int, str]]
    label_names: dict[int, str] = field(default_factory=lambda: {0: "negative", 1: "positive"})
    image_size: int = 0
    channels: int = 3
    source: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["attributes"] = {a: {str(k): v for k, v in m.items()} for a, m in self.attributes.items()}
        d["label_names"] = {str(k): v for k, v in self.label_names.items()}
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "DatasetInfo":
        d = json.loads(text)
        d["attributes"] = {a: {int(k): v for k, v in m.items()} for a, m in d["attributes"].items()}
        d["label_names"] = {int(k): v for k, v in d.get("label_names", {}).items()}
        return cls(**d)


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a local folder or a URI (s3://, gs://, file://)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def assign_splits(
    df: pd.DataFrame,
    unit_column: str = "patient_id",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> pd.Series:
    """Seeded split by patient (or lesion): every row of one unit lands in the same split."""
    if abs(sum(fractions) - 1.0) > 1e-6 or len(fractions) != 3:
        raise DataError(f"split fractions must be three numbers summing to 1, got {list(fractions)}")
    if unit_column not in df.columns:
        raise DataError(f"column '{unit_column}' is needed for the patient-level split")
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


def validate_manifest(manifest: pd.DataFrame, info: DatasetInfo, where: str = MANIFEST_FILE) -> None:
    """Check the normalised columns and codes; raise DataError naming the column and values."""
    for col in REQUIRED_COLUMNS:
        if col not in manifest.columns:
            raise DataError(f"{where}: missing column '{col}'")
    for attr, mapping in info.attributes.items():
        if attr not in manifest.columns:
            raise DataError(f"{where}: missing sensitive-attribute column '{attr}'")
        bad = sorted(set(manifest[attr].unique()) - set(mapping))
        if bad:
            raise DataError(f"{where}: column '{attr}' has codes {bad} with no recorded mapping {mapping}")
    bad_labels = sorted(set(manifest["label"].unique()) - set(info.label_names))
    if bad_labels:
        raise DataError(f"{where}: column 'label' has unexpected values {bad_labels}")
    bad_splits = sorted(set(manifest["split"].unique()) - set(SPLITS))
    if bad_splits:
        raise DataError(f"{where}: column 'split' has unexpected values {bad_splits}")
    leaked = manifest.groupby("patient_id")["split"].nunique()
    leaked = leaked[leaked > 1]
    if len(leaked):
        raise DataError(f"{where}: patients in more than one split, e.g. {list(leaked.index[:5])}")


def summarise(manifest: pd.DataFrame, attributes: Iterable[str]) -> list[dict]:
    """Count and label prevalence per split and per group of each attribute."""
    rows = []
    for split in SPLITS:
        part = manifest[manifest["split"] == split]
        rows.append({"split": split, "attribute": "all", "group": "all", "count": int(len(part)),
                     "prevalence": float(part["label"].mean()) if len(part) else float("nan")})
        for attr in attributes:
            for code, grp in part.groupby(attr):
                rows.append({"split": split, "attribute": attr, "group": int(code), "count": int(len(grp)),
                             "prevalence": float(grp["label"].mean())})
    return rows


def write_packed_dataset(
    out: str,
    manifest: pd.DataFrame,
    images: Iterable[np.ndarray],
    info: DatasetInfo,
    shard_size: int = 2048,
    overwrite: bool = False,
) -> str:
    """Write manifest + packed uint8 shards atomically: output appears only when complete.

    ``images`` yields one (H, W, C) uint8 array per manifest row, in manifest order.
    """
    manifest = manifest.reset_index(drop=True).copy()
    if "sample_id" not in manifest.columns:
        manifest.insert(0, "sample_id", np.arange(len(manifest), dtype=np.int64))
    validate_manifest(manifest, info)
    fs, path = _filesystem(out)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        if not overwrite:
            raise DataError(f"output folder '{out}' already exists (pass overwrite to replace it)")
    local = isinstance(fs, pafs.LocalFileSystem)
    staging = (tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(path) or ".") if local
               else f"{path}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        fs.create_dir(f"{staging}/{SHARD_DIR}", recursive=True)
        shard_of = np.zeros(len(manifest), dtype=np.int32)
        buf_ids: list[int] = []
        buf_imgs: list[bytes] = []
        shape = None
        shard_idx = 0

        def flush() -> None:
            nonlocal shard_idx, buf_ids, buf_imgs
            if not buf_ids:
                return
            table = pa.table({
                "sample_id": pa.array(buf_ids, pa.int64()),
                "image": pa.array(buf_imgs, pa.binary()),
                "height": pa.array([shape[0]] * len(buf_ids), pa.int32()),
                "width": pa.array([shape[1]] * len(buf_ids), pa.int32()),
                "channels": pa.array([shape[2]] * len(buf_ids), pa.int32()),
            })
            with fs.open_output_stream(f"{staging}/{SHARD_DIR}/part-{shard_idx:05d}.parquet") as f:
                pq.write_table(table, f, compression="zstd")
            shard_idx += 1
            buf_ids, buf_imgs = [], []

        n_written = 0
        for i, img in enumerate(images):
            img = np.ascontiguousarray(img, dtype=np.uint8)
            if img.ndim == 2:
                img = img[..., None]
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise DataError(f"image for row {i} ({manifest['image'].iloc[i]}) has shape {img.shape}, "
                                f"expected {shape}: all packed images must share one size")
            shard_of[i] = shard_idx
            buf_ids.append(int(manifest["sample_id"].iloc[i]))
            buf_imgs.append(img.tobytes())
            n_written += 1
            if len(buf_ids) >= shard_size:
                flush()
        flush()
        if n_written != len(manifest):
            raise DataError(f"got {n_written} images for {len(manifest)} manifest rows")
        manifest["shard"] = shard_of
        if shape is not None:
            info.image_size = int(shape[0])
            info.channels = int(shape[2])
        with fs.open_output_stream(f"{staging}/{MANIFEST_FILE}") as f:
            pq.write_table(pa.Table.from_pandas(manifest, preserve_index=False), f)
        with fs.open_output_stream(f"{staging}/{INFO_FILE}") as f:
            f.write(info.to_json().encode())
        with fs.open_output_stream(f"{staging}/{SUMMARY_FILE}") as f:
            f.write(json.dumps(summarise(manifest, info.attributes), indent=2).encode())
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)
        fs.move(staging, path)
    except BaseException:
        try:
            if local:
                shutil.rmtree(staging, ignore_errors=True)
            else:
                fs.delete_dir(staging)
        except Exception:
            pass
        raise
    return out


@dataclass
class PackedDataset:
    """A prepared dataset held in memory: manifest rows aligned with an (N, H, W, C) uint8 array."""

    manifest: pd.DataFrame
    images: np.ndarray
    info: DatasetInfo

    def split(self, name: str) -> "PackedDataset":
        mask = (self.manifest["split"] == name).to_numpy()
        return PackedDataset(self.manifest[mask].reset_index(drop=True), self.images[mask], self.info)


def load_manifest(uri: str) -> tuple[pd.DataFrame, DatasetInfo]:
    fs, path = _filesystem(uri)
    for name in (MANIFEST_FILE, INFO_FILE):
        if fs.get_file_info(f"{path}/{name}").type == pafs.FileType.NotFound:
            raise DataError(f"'{uri}' is not a prepared dataset: '{name}' is missing "
                            "(run `fairtune-ray data prepare` first)")
    with fs.open_input_file(f"{path}/{INFO_FILE}") as f:
        info = DatasetInfo.from_json(f.read().decode())
    manifest = pq.read_table(f"{path}/{MANIFEST_FILE}", filesystem=fs).to_pandas()
    return manifest, info


def load_packed_dataset(uri: str) -> PackedDataset:
    """Read manifest and shards (local or remote) into memory, images in manifest order."""
    manifest, info = load_manifest(uri)
    fs, path = _filesystem(uri)
    selector = pafs.FileSelector(f"{path}/{SHARD_DIR}")
    files = sorted(fi.path for fi in fs.get_file_info(selector) if fi.path.endswith(".parquet"))
    if not files:
        raise DataError(f"'{uri}/{SHARD_DIR}' holds no packed image shards")
    ids, chunks = [], []
    for file in files:
        t = pq.read_table(file, filesystem=fs)
        h, w, c = (t.column(k)[0].as_py() for k in ("height", "width", "channels"))
        raw = t.column("image").combine_chunks()
        # Binary values are contiguous in the data buffer: one frombuffer, no per-row copies.
        offsets = np.frombuffer(raw.buffers()[1], dtype=np.int32)[raw.offset: raw.offset + len(raw) + 1]
        data = np.frombuffer(raw.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
        chunks.append(data.reshape(len(raw), h, w, c))
        ids.append(t.column("sample_id").to_numpy())
    all_ids = np.concatenate(ids)
    images = np.concatenate(chunks) if len(chunks) > 1 else chunks[0].copy()
    order = pd.Series(np.arange(len(all_ids)), index=all_ids)
    missing = set(manifest["sample_id"]) - set(all_ids)
    if missing:
        raise DataError(f"'{uri}': {len(missing)} manifest rows have no packed image, e.g. {sorted(missing)[:5]}")
    images = images[order.loc[manifest["sample_id"].to_numpy()].to_numpy()]
    return PackedDataset(manifest, images, info)
