"""The normalised dataset format every adapter writes and every trial reads.

A prepared dataset is a folder (local path or any pyarrow filesystem URI such as ``s3://``)::

    dataset.json                 name, label names, which label is the disease, sensitive-attribute
                                 code mappings, image size
    manifest.parquet             one row per image: sample_id, image (source path), label,
                                 one int column per sensitive attribute, patient_id, split, shard
    shards/part-00000.parquet    packed pixels: sample_id, image (uint8 H*W*C bytes), height, width, channels
    summary.json                 counts and label prevalence per split and group

Images are decoded once and stored as raw uint8 so trials never decode JPEGs again.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fairtune_ray.common.errors import InputError
from fairtune_ray.common.files import atomic_path

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("sample_id", "image", "label", "patient_id", "split")
MANIFEST_FILE = "manifest.parquet"
INFO_FILE = "dataset.json"
SUMMARY_FILE = "summary.json"
SHARD_DIR = "shards"


class DataError(InputError):
    """Bad dataset input; the message names the file, column or value at fault."""


def check_disease_label(value: object, where: str = "disease_label") -> int:
    """0 or 1 (also as text, from the command line or JSON); anything else is a DataError naming ``where``."""
    if not isinstance(value, bool) and str(value).strip() in ("0", "1"):
        return int(str(value).strip())
    raise DataError(f"{where} must be 0 or 1 (the label value that means the disease), got {value!r}")


@dataclass
class DatasetInfo:
    """What a manifest's integer codes mean.

    ``disease_label`` is the label value that means the disease: 1 for most datasets, 0 where label 1
    is "no finding" (CheXpert, MIMIC-CXR). Underdiagnosis (a sick patient called healthy) is the FNR
    of label 1 in the first case and its FPR in the second, so every metric reads it from here. A
    dataset.json written before the key existed reads as 1, which is what every metric assumed then.
    """

    name: str
    attributes: dict[str, dict[int, str]]
    label_names: dict[int, str] = field(default_factory=lambda: {0: "negative", 1: "positive"})
    disease_label: int = 1
    image_size: int = 0
    channels: int = 3
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.disease_label = check_disease_label(self.disease_label, f"{INFO_FILE}: disease_label")

    @property
    def positive_is_disease(self) -> bool:
        """Whether label 1 (the class the model scores) is the disease: what the metrics take."""
        return self.disease_label == 1

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


def filesystem_and_path(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a local folder or a URI (s3://, gs://, file://)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


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
    fs, path = filesystem_and_path(out)
    if fs.get_file_info(path).type != pafs.FileType.NotFound and not overwrite:
        raise DataError(f"output folder '{out}' already exists (pass overwrite to replace it)")
    with _staging_folder(fs, path) as staging:
        shards = _ShardWriter(fs, f"{staging}/{SHARD_DIR}", shard_size)
        manifest["shard"] = shards.write_all(manifest, images)
        if shards.shape is not None:
            info.image_size = int(shards.shape[0])
            info.channels = int(shards.shape[2])
        _write_metadata(fs, staging, manifest, info)
    return out


@contextmanager
def _staging_folder(fs: pafs.FileSystem, path: str) -> Iterator[str]:
    """A folder beside ``path`` that replaces it in one move when the block succeeds, and is
    removed when it fails: a reader never sees a half-written dataset."""
    if isinstance(fs, pafs.LocalFileSystem):
        with atomic_path(path) as tmp:
            yield str(tmp)
        return
    staging = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield staging
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)
        fs.move(staging, path)
    except BaseException:
        try:
            fs.delete_dir(staging)
        except Exception:  # best effort: the original error matters more
            pass
        raise


class _ShardWriter:
    """Packs images into Parquet shards of ``shard_size`` rows; every image must have one shape."""

    def __init__(self, fs: pafs.FileSystem, folder: str, shard_size: int) -> None:
        fs.create_dir(folder, recursive=True)
        self.fs, self.folder, self.shard_size = fs, folder, shard_size
        self.shape: Optional[tuple[int, ...]] = None
        self.index = 0
        self._ids: list[int] = []
        self._images: list[bytes] = []

    def write_all(self, manifest: pd.DataFrame, images: Iterable[np.ndarray]) -> np.ndarray:
        """Write one image per manifest row; returns each row's shard number."""
        shard_of = np.zeros(len(manifest), dtype=np.int32)
        n_written = 0
        for i, img in enumerate(images):
            img = self._checked(img, i, manifest)
            shard_of[i] = self.index
            self._ids.append(int(manifest["sample_id"].iloc[i]))
            self._images.append(img.tobytes())
            n_written += 1
            if len(self._ids) >= self.shard_size:
                self._flush()
        self._flush()
        if n_written != len(manifest):
            raise DataError(f"got {n_written} images for {len(manifest)} manifest rows")
        return shard_of

    def _checked(self, img: np.ndarray, i: int, manifest: pd.DataFrame) -> np.ndarray:
        img = np.ascontiguousarray(img, dtype=np.uint8)
        if img.ndim == 2:
            img = img[..., None]
        if self.shape is None:
            self.shape = img.shape
        elif img.shape != self.shape:
            raise DataError(f"image for row {i} ({manifest['image'].iloc[i]}) has shape {img.shape}, "
                            f"expected {self.shape}: all packed images must share one size")
        return img

    def _flush(self) -> None:
        if not self._ids:
            return
        n, (h, w, c) = len(self._ids), self.shape[:3]
        table = pa.table({
            "sample_id": pa.array(self._ids, pa.int64()),
            "image": pa.array(self._images, pa.binary()),
            "height": pa.array([h] * n, pa.int32()),
            "width": pa.array([w] * n, pa.int32()),
            "channels": pa.array([c] * n, pa.int32()),
        })
        with self.fs.open_output_stream(f"{self.folder}/part-{self.index:05d}.parquet") as f:
            pq.write_table(table, f, compression="zstd")
        self.index += 1
        self._ids, self._images = [], []


def _write_metadata(fs: pafs.FileSystem, folder: str, manifest: pd.DataFrame, info: DatasetInfo) -> None:
    with fs.open_output_stream(f"{folder}/{MANIFEST_FILE}") as f:
        pq.write_table(pa.Table.from_pandas(manifest, preserve_index=False), f)
    with fs.open_output_stream(f"{folder}/{INFO_FILE}") as f:
        f.write(info.to_json().encode())
    with fs.open_output_stream(f"{folder}/{SUMMARY_FILE}") as f:
        f.write(json.dumps(summarise(manifest, info.attributes), indent=2).encode())


REPREPARE = "re-run `fairtune-ray data prepare` to rebuild the dataset"


def _read_info(fs: pafs.FileSystem, path: str, uri: str) -> DatasetInfo:
    try:
        with fs.open_input_file(f"{path}/{INFO_FILE}") as f:
            return DatasetInfo.from_json(f.read().decode())
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as err:
        raise DataError(f"{uri}/{INFO_FILE} is damaged and cannot be read ({type(err).__name__}: {err}); "
                        f"{REPREPARE}") from None


def read_table(fs: pafs.FileSystem, file: str, what: str, columns: Optional[list[str]] = None) -> pa.Table:
    """A Parquet file of the dataset, or a DataError naming it when it is truncated or corrupted."""
    try:
        return pq.read_table(file, filesystem=fs, columns=columns)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
        raise DataError(f"{what} '{file}' is damaged or truncated and cannot be read ({err}); {REPREPARE}") from None


def load_manifest(uri: str) -> tuple[pd.DataFrame, DatasetInfo]:
    """The manifest and dataset.json of a prepared dataset (no pixels); a damaged file is a DataError."""
    fs, path = filesystem_and_path(uri)
    for name in (MANIFEST_FILE, INFO_FILE):
        if fs.get_file_info(f"{path}/{name}").type == pafs.FileType.NotFound:
            raise DataError(f"'{uri}' is not a prepared dataset: '{name}' is missing "
                            "(run `fairtune-ray data prepare` first)")
    info = _read_info(fs, path, uri)
    manifest = read_table(fs, f"{path}/{MANIFEST_FILE}", "the manifest").to_pandas()
    validate_manifest(manifest, info, where=f"{uri}/{MANIFEST_FILE}")
    return manifest, info


def pixel_bytes(manifest: pd.DataFrame, info: DatasetInfo) -> int:
    """The dataset's uncompressed pixel size, from its metadata alone."""
    return int(len(manifest)) * int(info.image_size) ** 2 * int(info.channels)
