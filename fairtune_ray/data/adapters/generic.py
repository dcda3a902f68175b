"""Any table of images: CelebA, LFW+a, private data.

A CSV (or CSV.gz/TSV) or Parquet table with one row per image::

    --option table=labels.csv            the table (relative to --root, or absolute)
    --option image_column=path           image path, relative to --option image_root (default:
                                         the table's folder) or absolute
    --option label=malignant             a 0/1 (or boolean) column, or a pandas expression over
                                         the columns, e.g. "dx in ['mel', 'akiec']" or
                                         "`No Finding` == 1" (backticks for names with spaces)
    --option patient_column=patient_id   optional split unit (default: each image)
    --option split_column=split          optional official split (train/val/test; valid/validate
                                         also accepted)
    --option disease_label=1             which label value is the disease: 1 (default), or 0 when
                                         label 1 means healthy (e.g. "`No Finding` == 1"); recorded
                                         in dataset.json so underdiagnosis counts the right error

Sensitive attributes are given as ``--attribute SPEC`` where SPEC is ``NAME`` (a categorical
column of that name), ``NAME=COLUMN`` (renamed) or ``NAME=COLUMN:C1,C2,...`` (a numeric column
binned at the cut points: ``age_binary=age:60`` gives {0: "<60", 1: ">=60"}). Categories are
coded 0..k-1 in sorted order and the mapping is recorded in dataset.json; blank or "unknown"
values make the row's attribute unknown (the row is dropped and counted).

For CelebA, convert ``list_attr_celeba.txt`` to CSV (columns image_id, Male, Young, ...) and use
e.g. ``--option image_column=image_id --option image_root=img_align_celeba --option label="Smiling == 1"
--attribute sex=Male``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairtune_ray.data.adapters.base import Adapter, AdapterContext, AdapterResult, DropLog, Option
from fairtune_ray.data.adapters.columns import is_missing
from fairtune_ray.data.adapters.registry import register_adapter
from fairtune_ray.data.adapters.tables import read_table, require_columns
from fairtune_ray.data.manifest import DataError, check_disease_label

_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
           "validation": "val", "dev": "val", "test": "test", "testing": "test"}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def parse_attribute_spec(spec: str) -> tuple[str, str, list[float] | None]:
    """``NAME[=COLUMN][:C1,C2,...]`` -> (name, column, cut points or None)."""
    head, _, cuts = spec.partition(":")
    name, _, column = head.partition("=")
    name, column = name.strip(), (column.strip() or name.strip())
    if not name:
        raise DataError(f"generic: attribute spec '{spec}' has no name (NAME[=COLUMN][:C1,C2,...])")
    if not cuts:
        return name, column, None
    try:
        points = sorted(float(c) for c in cuts.split(",") if c.strip())
    except ValueError:
        raise DataError(f"generic: attribute spec '{spec}': cut points must be numbers, e.g. age_binary=age:60") from None
    if not points:
        raise DataError(f"generic: attribute spec '{spec}': no cut points after ':'")
    return name, column, points


def bin_names(points: list[float]) -> dict[int, str]:
    if len(points) == 1:
        return {0: f"<{_fmt(points[0])}", 1: f">={_fmt(points[0])}"}
    names = {0: f"<{_fmt(points[0])}"}
    for i in range(1, len(points)):
        names[i] = f"{_fmt(points[i - 1])}-{_fmt(points[i])}"
    names[len(points)] = f">={_fmt(points[-1])}"
    return names


def _disease_label_option(value: Any) -> int:
    """0 or 1; otherwise a DataError (a ValueError), which ``resolve_options`` reports naming the option."""
    return check_disease_label(value, "the value")


def _sort_key(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float, np.integer, np.floating)) else (1, 0.0, str(v))


@register_adapter("generic", aliases=("csv", "table"))
class GenericAdapter(Adapter):
    """Any CSV/Parquet table: image column, label column or expression, attribute columns (binnable)."""

    title = "generic table"
    unit = "patient (patient_column) or image"
    options = {
        "table": Option(None, "CSV/TSV/Parquet table, relative to --root or absolute"),
        "image_column": Option("image", "column with image paths"),
        "image_root": Option(None, "folder the image paths are relative to (default: the table's folder)"),
        "label": Option(None, "0/1 column, or a pandas expression over the columns"),
        "patient_column": Option(None, "column with the split unit (default: each image is its own unit)"),
        "split_column": Option(None, "column with an official train/val/test split"),
        "positive_name": Option("positive", "name recorded for label 1"),
        "negative_name": Option("negative", "name recorded for label 0"),
        "disease_label": Option(1, "label value that means the disease: 1, or 0 when label 1 is healthy",
                                type=_disease_label_option),
    }

    def requested_attributes(self, ctx: AdapterContext) -> list[str]:
        if not ctx.attributes:
            raise DataError("generic: give at least one sensitive attribute with --attribute NAME[=COLUMN][:CUTS]")
        return list(ctx.attributes)

    def load(self, ctx: AdapterContext) -> AdapterResult:
        opts = self.resolve_options(ctx.options)
        specs = [parse_attribute_spec(s) for s in self.requested_attributes(ctx)]
        if not opts["table"]:
            raise DataError("generic: --option table=FILE is required (a CSV or Parquet table, one row per image)")
        if not opts["label"]:
            raise DataError("generic: --option label=COLUMN_OR_EXPRESSION is required")
        table_path = Path(opts["table"]).expanduser()
        if not table_path.is_absolute():
            table_path = ctx.root / table_path
        if not table_path.is_file():
            raise DataError(f"generic: table '{table_path}' (option table) does not exist")
        img_col = opts["image_column"]
        as_text = {c: str for c in (img_col, opts["patient_column"], opts["split_column"]) if c}
        df = read_table(table_path, dataset="generic", dtype=as_text)
        cols = [img_col] + [c for _, c, _ in specs]
        cols += [opts[k] for k in ("patient_column", "split_column") if opts[k]]
        require_columns(df, cols, table_path, dataset="generic")
        drops = DropLog()

        label = self._label(df, opts["label"], table_path)
        image_root = Path(opts["image_root"]).expanduser() if opts["image_root"] else table_path.parent
        if not image_root.is_absolute():
            image_root = ctx.root / image_root
        paths = df[img_col].astype(str)
        table = pd.DataFrame({
            "image": [ctx.rel(p if Path(p).is_absolute() else image_root / p) for p in paths],
            "label": label.to_numpy(),
            "patient_id": (df[opts["patient_column"]].astype(str) if opts["patient_column"] else paths).to_numpy(),
        })
        attributes: dict[str, dict[int, str]] = {}
        for name, column, points in specs:
            if name in table.columns or name in attributes:
                raise DataError(f"generic: attribute name '{name}' is used twice or clashes with a manifest column")
            codes, mapping = self._attribute(df[column], name, column, points, table_path)
            table[name] = codes.to_numpy()
            attributes[name] = mapping
        policy = "random"
        if opts["split_column"]:
            col = opts["split_column"]
            raw = df[col].astype(str).str.strip().str.lower()
            bad = sorted(set(raw[~raw.isin(_SPLITS)]))
            if bad:
                raise DataError(f"generic: '{table_path}' column '{col}' has unexpected split value(s) {bad[:12]}; "
                                "expected train/val/test")
            table["split"] = raw.map(_SPLITS).to_numpy()
            policy = "official"
        table = drops.drop(table, table["label"].isna(), "label_missing")
        table["label"] = table["label"].astype(int)
        return AdapterResult(
            table=table, attributes=attributes,
            label_names={0: opts["negative_name"], 1: opts["positive_name"]}, split_policy=policy,
            disease_label=opts["disease_label"],
            extra={"table": str(table_path), "label_rule": opts["label"], "attribute_specs": list(ctx.attributes or []),
                   "dropped": drops.records},
        )

    @staticmethod
    def _label(df: pd.DataFrame, label: str, path: Path) -> pd.Series:
        if label in df.columns:
            col = df[label]
            if col.dtype == bool:
                return col.astype(float)
            num = pd.to_numeric(col, errors="coerce")
            bad = sorted(set(col[(num.isna() & col.notna()) | (num.notna() & ~num.isin([0, 1]))].astype(str)))
            if bad:
                raise DataError(f"generic: '{path}' label column '{label}' has value(s) {bad[:12]} that are not 0/1; "
                                f"give an expression instead, e.g. --option label=\"{label} == '{bad[0]}'\"")
            return num.astype(float)
        try:
            out = df.eval(label)
        except Exception as err:
            raise DataError(f"generic: label '{label}' is neither a column of '{path}' nor a valid expression over "
                            f"its columns ({type(err).__name__}: {err}); columns: {list(map(str, df.columns))[:30]}") from None
        if not isinstance(out, pd.Series) or len(out) != len(df):
            raise DataError(f"generic: label expression '{label}' does not give one value per row of '{path}'")
        num = pd.to_numeric(out, errors="coerce")
        if not num.dropna().isin([0, 1]).all():
            raise DataError(f"generic: label expression '{label}' gives values other than true/false: "
                            f"{sorted(set(out.astype(str)))[:12]}")
        return num.astype(float)

    @staticmethod
    def _attribute(col: pd.Series, name: str, column: str, points: list[float] | None,
                   path: Path) -> tuple[pd.Series, dict[int, str]]:
        if points is not None:
            num = pd.to_numeric(col, errors="coerce")
            bad = sorted({str(v) for v in col[num.isna() & col.notna()] if not is_missing(v)})
            if bad:
                raise DataError(f"generic: '{path}' column '{column}' (attribute '{name}', binned) has non-numeric "
                                f"value(s) {bad[:12]}")
            codes = pd.Series(np.searchsorted(np.asarray(points), num.to_numpy(), side="right"), index=col.index)
            return codes.astype(float).where(num.notna()), bin_names(points)
        known = [v for v in pd.unique(col.dropna()) if not is_missing(v)]
        values = sorted(known, key=_sort_key)
        if not values:
            raise DataError(f"generic: '{path}' column '{column}' (attribute '{name}') has no known values")
        code_of = {v: float(i) for i, v in enumerate(values)}
        mapping = {i: (_fmt(v) if isinstance(v, (float, np.floating)) and not math.isnan(v) else str(v))
                   for i, v in enumerate(values)}
        return col.map(code_of).astype(float), mapping
