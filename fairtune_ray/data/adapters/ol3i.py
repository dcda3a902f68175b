"""OL3I, Opportunistic L3 Imaging (Zambrano Chaves et al. 2023): ischemic heart disease within
1 year from an axial CT slice at the third lumbar vertebra; sex, age.

Obtained from the Stanford AIMI shared datasets ("OL3I",
https://stanfordaimi.azurewebsites.net/datasets/3263e34a-252e-460f-8f63-d585a9bfecfc). Expected::

    clinical_data.csv   columns anon_id, age, sex, label_1y, set_1y (train/val/test),
                        label_5y, set_5y, bmi, smoker, ...
    l3_slices.h5        one 512x512 slice (Hounsfield units) per anon_id; reading it needs the
                        optional h5py package. Without h5py, export the slices once as
                        ``l3_slices/<anon_id>.npy`` (or .png) anywhere below the root.

Label: ``label_1y`` (``--option horizon=5y`` uses label_5y/set_5y). Pixels are windowed to
``--option window=-1000,1000`` HU and scaled to uint8. Sex: M/F or Male/Female text; if your copy
codes sex as numbers, say which is which with ``--option sex_codes=0=M,1=F``. Each anon_id is
one patient. Split: the official ``set_1y`` column (``--option official_split=false``: random).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from fairtune_ray.data.adapters.base import Adapter, AdapterContext, AdapterResult, DropLog, Option, parse_bool
from fairtune_ray.data.adapters.columns import AGE_5, AGE_BINARY, SEX, add_age_columns, map_values, numeric_age
from fairtune_ray.data.adapters.readers import read_array, read_pil
from fairtune_ray.data.adapters.registry import register_adapter
from fairtune_ray.data.adapters.tables import find_file, index_files, read_table, require_columns
from fairtune_ray.data.manifest import DataError


def _window(text: str) -> tuple[float, float]:
    lo, hi = (float(x) for x in str(text).split(","))
    if hi <= lo:
        raise ValueError(f"window '{text}': the upper bound must exceed the lower")
    return lo, hi


def _sex_codes(text: str) -> dict:
    out = {}
    for item in str(text).split(","):
        k, _, v = item.partition("=")
        v = v.strip().upper()
        if v not in ("M", "F"):
            raise ValueError(f"sex_codes item '{item}': expected CODE=M or CODE=F")
        k = k.strip()
        out[int(k) if k.lstrip("-").isdigit() else k] = 0 if v == "M" else 1
    return out


def _h5py_available() -> bool:
    """h5py (optional) is installed, so the published l3_slices.h5 can be read."""
    return importlib.util.find_spec("h5py") is not None


@register_adapter("ol3i")
class OL3IAdapter(Adapter):
    """OL3I abdominal CT L3 slices: ischemic heart disease at 1 year; sex, age."""

    title = "OL3I"
    source_url = "https://stanfordaimi.azurewebsites.net/datasets/3263e34a-252e-460f-8f63-d585a9bfecfc"
    label_names = {0: "no IHD", 1: "IHD"}
    disease_label = 1  # ischemic heart disease
    attributes = {"sex": SEX, "age_binary": AGE_BINARY, "age_5": AGE_5}
    default_attributes = ("sex", "age_binary", "age_5")
    options = {
        "horizon": Option("1y", "outcome horizon: 1y or 5y", lambda s: {"1y": "1y", "5y": "5y"}[str(s).lower()]),
        "window": Option((-1000.0, 1000.0), "HU window LO,HI scaled to 0-255", _window),
        "sex_codes": Option(None, "how numeric sex codes read, e.g. 0=M,1=F", _sex_codes),
        "official_split": Option(True, "use the set_<horizon> column (else random patient split)", parse_bool),
    }

    def load(self, ctx: AdapterContext) -> AdapterResult:
        opts = self.resolve_options(ctx.options)
        wanted = self.requested_attributes(ctx)
        drops = DropLog()
        h = opts["horizon"]
        meta_path = find_file(ctx.root, ["clinical_data.csv"], dataset=self.title, what="clinical data file")
        df = read_table(meta_path, dataset=self.title, dtype={"anon_id": str})
        label_col, set_col = f"label_{h}", f"set_{h}"
        needed = ["anon_id", label_col] + (["sex"] if "sex" in wanted else []) + (
            ["age"] if {"age_binary", "age_5"} & set(wanted) else []) + ([set_col] if opts["official_split"] else [])
        require_columns(df, needed, meta_path, dataset=self.title)
        label = map_values(df[label_col], {0: 0, 1: 1}, dataset=self.title, path=meta_path, column=label_col)
        ids = df["anon_id"].astype(str).str.strip()
        table = pd.DataFrame({"label": label.to_numpy(), "patient_id": ids.to_numpy()})

        lo, hi = opts["window"]
        reader, source = self._add_images(table, ctx, meta_path, ids, lo, hi)
        if "sex" in wanted:
            table["sex"] = self._sex(df["sex"], opts["sex_codes"], meta_path).to_numpy()
        if {"age_binary", "age_5"} & set(wanted):
            add_age_columns(table, numeric_age(df["age"], dataset=self.title, path=meta_path, column="age"), wanted)
        policy = "random"
        if opts["official_split"]:
            table["split"] = map_values(df[set_col], {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2},
                                        dataset=self.title, path=meta_path, column=set_col).map(
                {0.0: "train", 1.0: "val", 2.0: "test"}).to_numpy()
            policy = "official"
        table = drops.drop(table, table["label"].isna(), f"{label_col}_missing")
        if policy == "official":
            table = drops.drop(table, table["split"].isna(), f"{set_col}_missing")
        table["label"] = table["label"].astype(int)
        return AdapterResult(
            table=table, attributes={a: self.attributes[a] for a in wanted}, label_names=self.label_names,
            reader=reader, split_policy=policy,
            extra={"metadata": str(meta_path), "images": source, "label_rule": f"{label_col} == 1",
                   "window_hu": [lo, hi], "dropped": drops.records},
        )

    def _add_images(self, table: pd.DataFrame, ctx: AdapterContext, meta_path: Path, ids: pd.Series,
                    lo: float, hi: float) -> tuple[Callable[..., Any], str]:
        """Image columns from the published HDF5 (with h5py) or a per-slice export; (reader, source)."""
        h5 = find_file(ctx.root, ["l3_slices.h5"], dataset=self.title, what="image file", required=False)
        if h5 is not None and _h5py_available():
            table["image"] = ctx.rel(h5)
            table["image_key"] = ids.to_numpy()
            return functools.partial(read_array, vmin=lo, vmax=hi), str(h5)
        index = index_files(meta_path.parent, (".npy", ".png"))
        if not any(i in index for i in ids):
            hint = ("'l3_slices.h5' was found, but reading it needs the h5py package, which is not installed"
                    if h5 is not None else "neither 'l3_slices.h5' nor exported slices were found")
            raise DataError(f"{self.title}: {hint} under '{ctx.root}'. Install h5py, or export each slice as "
                            f"l3_slices/<anon_id>.npy (e.g. {ids.iloc[0] if len(ids) else 'ID'}.npy)")
        default_dir = meta_path.parent / "l3_slices"
        table["image"] = [ctx.rel(index.get(i, default_dir / f"{i}.npy")) for i in ids]
        return _read_exported(lo, hi), "exported slices"

    def _sex(self, column: pd.Series, sex_codes: Optional[dict], meta_path: Path) -> pd.Series:
        """M/F text, or numbers read through ``--option sex_codes`` (numbers without it: a hint)."""
        mapping: dict = {"m": 0, "male": 0, "f": 1, "female": 1}
        mapping.update(sex_codes or {})
        try:
            return map_values(column, mapping, dataset=self.title, path=meta_path, column="sex")
        except DataError as err:
            if pd.api.types.is_numeric_dtype(column) and not sex_codes:
                raise DataError(f"{err}. This copy codes sex as numbers: say which code is which with "
                                "--option sex_codes=0=M,1=F (or 0=F,1=M)") from None
            raise


def _read_exported(lo: float, hi: float):
    return functools.partial(_read_exported_slice, vmin=lo, vmax=hi)


def _read_exported_slice(path: str, key=None, *, vmin: float, vmax: float):
    """A per-slice export: ``.npy`` in HU (windowed) or an already 8-bit image."""
    if path.lower().endswith(".npy"):
        return read_array(path, key, vmin=vmin, vmax=vmax)
    return read_pil(path, key)
