"""PAPILA fundus photographs (Kovalyk et al. 2022): glaucoma vs healthy, both eyes per patient.

Obtained from figshare (https://doi.org/10.6084/m9.figshare.14798004, "PapilaDB"). Expected::

    ClinicalData/patient_data_od.xlsx   right eyes   } columns ID ("#002"), Age, Gender
    ClinicalData/patient_data_os.xlsx   left eyes    } (0 male, 1 female), Diagnosis (0 healthy,
                                                       1 glaucoma, 2 suspect), ...
    FundusImages/RET002OD.jpg, RET002OS.jpg, ...

Reading ``.xlsx`` needs the optional ``openpyxl`` package. Without it, export each sheet to CSV
with the same columns (``patient_data_od.csv`` / ``patient_data_os.csv`` next to the xlsx, as
MEDFAIR does); a title row above the header is skipped. Label: glaucoma (1) vs healthy (0);
suspect eyes are dropped (counted in dataset.json). Splits are by patient ID, so both eyes of
a patient stay together.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairtune_ray.data.adapters.base import Adapter, AdapterContext, AdapterResult, DropLog
from fairtune_ray.data.adapters.columns import AGE_5, AGE_BINARY, SEX, add_age_columns, map_values, numeric_age
from fairtune_ray.data.adapters.registry import register_adapter
from fairtune_ray.data.adapters.tables import find_dir, find_file, read_table, require_columns

COLUMNS = ["ID", "Age", "Gender", "Diagnosis"]


def _read_clinical(path: Path, dataset: str) -> pd.DataFrame:
    """The sheet, tolerating a title row above the column names (as in the published xlsx)."""
    df = read_table(path, dataset=dataset)
    if "ID" in df.columns:
        return df
    for i in range(min(5, len(df))):
        row = [str(v).strip() for v in df.iloc[i].tolist()]
        if "ID" in row and "Diagnosis" in row:
            return read_table(path, dataset=dataset, header=i + 1)
    return df


@register_adapter("papila")
class PapilaAdapter(Adapter):
    """PAPILA fundus images: glaucoma vs healthy (suspect dropped); sex, age."""

    title = "PAPILA"
    source_url = "https://doi.org/10.6084/m9.figshare.14798004"
    label_names = {0: "healthy", 1: "glaucoma"}
    disease_label = 1  # glaucoma
    attributes = {"sex": SEX, "age_binary": AGE_BINARY, "age_5": AGE_5}
    default_attributes = ("sex", "age_binary", "age_5")

    def load(self, ctx: AdapterContext) -> AdapterResult:
        self.resolve_options(ctx.options)
        wanted = self.requested_attributes(ctx)
        drops = DropLog()
        parts = []
        for eye, stem in (("OD", "patient_data_od"), ("OS", "patient_data_os")):
            path = find_file(ctx.root, [f"{stem}.xlsx", f"{stem}.csv"], dataset=self.title,
                             what="clinical data file", depth=3)
            df = _read_clinical(path, self.title)
            require_columns(df, COLUMNS, path, dataset=self.title)
            df = df[df["ID"].notna()].reset_index(drop=True)
            diag = map_values(df["Diagnosis"], {0: 0, 1: 1, 2: 2}, dataset=self.title, path=path,
                              column="Diagnosis", missing_ok=False)
            ids = df["ID"].astype(str).str.strip().str.lstrip("#")
            ids = ids.map(lambda s: s.split(".")[0].zfill(3) if s.replace(".", "").isdigit() else s)
            image_dir = find_dir(ctx.root, ["FundusImages"], default=path.parent.parent / "FundusImages", depth=3)
            t = pd.DataFrame({
                "image": [ctx.rel(image_dir / f"RET{i}{eye}.jpg") for i in ids],
                "label": diag.to_numpy(),
                "patient_id": ids.to_numpy(),
                "eye": eye,
            })
            if "sex" in wanted:
                t["sex"] = map_values(df["Gender"], {0: 0, 1: 1}, dataset=self.title, path=path,
                                      column="Gender").to_numpy()
            if {"age_binary", "age_5"} & set(wanted):
                add_age_columns(t, numeric_age(df["Age"], dataset=self.title, path=path, column="Age"), wanted)
            parts.append(t)
        table = pd.concat(parts, ignore_index=True)
        table = drops.drop(table, table["label"] == 2, "diagnosis_suspect")
        table["label"] = table["label"].astype(int)
        return AdapterResult(
            table=table, attributes={a: self.attributes[a] for a in wanted}, label_names=self.label_names,
            extra={"label_rule": "Diagnosis == 1 (glaucoma) vs 0 (healthy); 2 (suspect) dropped",
                   "dropped": drops.records},
        )
