"""Harvard-GF3300, Harvard Glaucoma Fairness (Luo et al. 2024): glaucoma from OCT RNFL
thickness maps; race (balanced Asian/Black/White), sex, age.

Obtained from https://ophai.hms.harvard.edu/datasets/harvard-glaucoma-fairness-3300-samples/
(code: https://github.com/Harvard-Ophthalmology-AI-Lab/Harvard-GF). 3300 patients, one
``.npz`` each, in the dataset's own split folders::

    train/data_0001.npz ...   (2100)   folder names also accepted: Training, val/Validation, test/Test
    val/...                   (300)
    test/...                  (900)

Each npz holds ``rnflt`` (200x200 RNFL thickness map, micrometres), ``oct_bscans``,
``glaucoma`` (0/1), ``age``, ``male`` (0 female, 1 male; some releases call it ``gender``),
``race`` (0 Asian, 1 Black, 2 White, or the same as text), ``md``, ``tds``, ... The image is
``rnflt`` (``--option field=...`` picks another 2-D field), mapped linearly from
``--option range=0,350`` micrometres to 0-255. A ``pid`` field, when present, is the patient id
(else the file name). Split: the folders (``--option official_split=false``: random). Fields
stored as pickled Python objects (text in some releases) are read only with
``--option allow_pickle=true``: unpickling a downloaded file can run code from it.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from fairtune_ray.data.adapters.base import Adapter, AdapterContext, AdapterResult, Option, parse_bool
from fairtune_ray.data.adapters.columns import AGE_5, AGE_BINARY, SEX, add_age_columns, map_values, numeric_age
from fairtune_ray.data.adapters.readers import read_npz_field
from fairtune_ray.data.adapters.registry import register_adapter
from fairtune_ray.data.adapters.tables import search_dirs
from fairtune_ray.data.manifest import DataError

RACE = {0: "Asian", 1: "Black", 2: "White"}
_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
            "test": "test", "testing": "test"}


def _range(text: str) -> tuple[float, float]:
    lo, hi = (float(x) for x in str(text).split(","))
    if hi <= lo:
        raise ValueError(f"range '{text}': the upper bound must exceed the lower")
    return lo, hi


def _scalar(data, name: str):
    v = np.asarray(data[name])
    return v.item() if v.size == 1 else v.tolist()


def read_npz_metadata(path: Path, fields: list[str], allow_pickle: bool = False) -> dict:
    """The scalar fields of one sample (only those members are decompressed).

    Object arrays (text stored as pickled objects) need ``allow_pickle``, and only the user may grant
    it: unpickling runs code from the file, which comes from a download.
    """
    try:
        with np.load(path, allow_pickle=allow_pickle) as data:
            return {f: (_scalar(data, f) if f in data.files else None) for f in fields} | {"_files": data.files}
    except ValueError as err:
        if allow_pickle or "allow_pickle" not in str(err):
            raise
        raise DataError(f"Harvard-GF3300: '{path}' stores fields as pickled Python objects, and unpickling can run "
                        "code from the file; if you trust it, pass --option allow_pickle=true") from None


def _coded(df: pd.DataFrame, column: str, mapping: dict, dataset: str, missing_ok: bool = True) -> pd.Series:
    """map_values over one npz field, naming example files that hold an unexpected value."""
    try:
        return map_values(df[column], mapping, dataset=dataset, path="*.npz", column=column, missing_ok=missing_ok)
    except DataError as err:
        ok = set()
        for k in mapping:
            ok.add(str(k).lower())
        bad = df[~df[column].map(lambda v: str(v).strip().lower().removesuffix(".0") in ok)]
        raise DataError(f"{err} (field '{column}', e.g. in {bad['image'].head(3).tolist()})") from None


@register_adapter("harvard-gf", aliases=("harvard-gf3300", "harvard_gf", "harvardgf"))
class HarvardGFAdapter(Adapter):
    """Harvard-GF3300 RNFL thickness maps: glaucoma; race, sex, age."""

    title = "Harvard-GF3300"
    source_url = "https://ophai.hms.harvard.edu/datasets/harvard-glaucoma-fairness-3300-samples/"
    label_names = {0: "non-glaucoma", 1: "glaucoma"}
    disease_label = 1  # glaucoma
    attributes = {"race": RACE, "sex": SEX, "age_binary": AGE_BINARY, "age_5": AGE_5}
    default_attributes = ("race", "sex", "age_binary", "age_5")
    options = {
        "field": Option("rnflt", "npz field used as the image"),
        "range": Option((0.0, 350.0), "value range LO,HI of the image field mapped to 0-255", _range),
        "official_split": Option(True, "use the dataset's split folders (else random patient split)", parse_bool),
        "allow_pickle": Option(False, "read fields stored as pickled Python objects (runs code from the files: "
                                      "only for files you trust)", parse_bool),
    }

    def load(self, ctx: AdapterContext) -> AdapterResult:
        opts = self.resolve_options(ctx.options)
        wanted = self.requested_attributes(ctx)
        folders: dict[str, Path] = {}
        for d in search_dirs(ctx.root, 2):
            split = _FOLDERS.get(d.name.lower())
            if split and split not in folders and any(d.glob("*.npz")):
                folders[split] = d
        files: list[tuple[Path, str | None]] = []
        if folders:
            for split in ("train", "val", "test"):
                if split in folders:
                    files += [(p, split) for p in sorted(folders[split].glob("*.npz"))]
        else:
            files = [(p, None) for p in sorted(ctx.root.rglob("*.npz"))]
        if not files:
            raise DataError(f"{self.title}: no .npz samples under '{ctx.root}' "
                            "(expected train/, val/ and test/ folders of data_XXXX.npz files)")
        rows = []
        for path, split in files:
            meta = read_npz_metadata(path, ["glaucoma", "race", "male", "gender", "age", "pid"], opts["allow_pickle"])
            missing = [f for f in ("glaucoma", "race", "age", opts["field"]) if f not in meta["_files"]]
            if meta["male"] is None and meta["gender"] is None:
                missing.append("male")
            if missing:
                raise DataError(f"{self.title}: '{path}' lacks field(s) {missing} (its fields: {meta['_files']})")
            pid = str(meta["pid"]).split("_")[0] if meta["pid"] not in (None, "") else path.stem
            rows.append({"image": ctx.rel(path), "glaucoma": meta["glaucoma"], "race": meta["race"],
                         "male": meta["male"] if meta["male"] is not None else meta["gender"],
                         "age": meta["age"], "patient_id": pid, "split": split, "file": path.name})
        df = pd.DataFrame(rows)
        where = f"{ctx.root} (*.npz)"
        label = _coded(df, "glaucoma", {0: 0, 1: 1}, self.title, missing_ok=False)
        table = pd.DataFrame({"image": df["image"], "label": label.astype(int), "patient_id": df["patient_id"]})
        if "race" in wanted:
            table["race"] = _coded(df, "race", {0: 0, 1: 1, 2: 2, "asian": 0, "black or african american": 1,
                                                "black": 1, "white or caucasian": 2, "white": 2}, self.title).to_numpy()
        if "sex" in wanted:
            table["sex"] = _coded(df, "male", {1: 0, 0: 1}, self.title).to_numpy()
        if {"age_binary", "age_5"} & set(wanted):
            add_age_columns(table, numeric_age(df["age"], dataset=self.title, path=where, column="age"), wanted)
        policy = "random"
        if opts["official_split"] and folders:
            table["split"] = df["split"]
            policy = "official"
        lo, hi = opts["range"]
        return AdapterResult(
            table=table, attributes={a: self.attributes[a] for a in wanted}, label_names=self.label_names,
            reader=functools.partial(read_npz_field, field=opts["field"], vmin=lo, vmax=hi), split_policy=policy,
            extra={"image_field": opts["field"], "range": [lo, hi], "split_folders": {k: str(v) for k, v in folders.items()},
                   "label_rule": "glaucoma == 1"},
        )
