"""CheXpert chest radiographs (Irvin et al. 2019): "No Finding"; sex, age and race.

Obtained from the Stanford AIMI shared datasets (https://stanfordaimi.azurewebsites.net/,
"CheXpert-v1.0" or the downsampled "CheXpert-v1.0-small"). Expected under ``--root`` (the
CheXpert folder or its parent)::

    train.csv, valid.csv      columns Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, ...
                              Path is e.g. "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    train/patient00001/study1/view1_frontal.jpg ...
    CHEXPERT DEMO.xlsx        the separately published demographics (columns PATIENT, GENDER,
                              AGE_AT_CXR, PRIMARY_RACE, ETHNICITY); a CSV export "CHEXPERT DEMO.csv"
                              works without openpyxl. Searched in the root and its parent, or
                              given with ``--option demographics=PATH``. Needed only for ``race``.

Label: "No Finding" == 1 (blank means not mentioned, i.e. 0; -1, uncertain, is dropped).
Label 1 is healthy, so dataset.json records ``disease_label: 0`` (underdiagnosis is then the FPR of label 1).
Frontal views only by default (``--option frontal_only=false`` keeps laterals). Official split:
``valid.csv`` (the public validation set, disjoint patients) becomes ``test``; ``train.csv`` is
split by patient into train/val in the ratio of the train/val fractions
(``--option official_split=false``: random patient split over both files).
Race from PRIMARY_RACE: White, Black, Asian, Other (e.g. "White, non-Hispanic" -> White;
"Unknown"/"Patient Refused" -> unknown, dropped for that attribute).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from fairtune_ray.data.adapters.base import (Adapter, AdapterContext, AdapterResult, DropLog, Option, parse_bool,
                                             warn)
from fairtune_ray.data.adapters.columns import (AGE_5, AGE_BINARY, SEX, UNEXPECTED, add_age_columns, map_values,
                                                map_with, numeric_age, split_official_and_random)
from fairtune_ray.data.adapters.registry import register_adapter
from fairtune_ray.data.adapters.tables import find_file, read_table, require_columns
from fairtune_ray.data.manifest import DataError

RACE = {0: "White", 1: "Black", 2: "Asian", 3: "Other"}


def chexpert_race(text: str):
    if "unknown" in text or "refused" in text or "declined" in text:
        return None
    if "white" in text or "caucasian" in text:
        return 0
    if "black" in text or "african" in text:
        return 1
    if "asian" in text:
        return 2
    if any(k in text for k in ("other", "native", "pacific", "hawaiian", "indian", "alaska")):
        return 3
    return UNEXPECTED


@register_adapter("chexpert", aliases=("cxp",))
class CheXpertAdapter(Adapter):
    """CheXpert chest X-rays: No Finding; sex, age, race (with the CHEXPERT DEMO file)."""

    title = "CheXpert"
    source_url = "https://stanfordaimi.azurewebsites.net/datasets/8cbd9ed4-2eb9-4565-affc-111cf4f7ebe2"
    label_names = {0: "finding", 1: "no finding"}
    disease_label = 0  # label 1 is "no finding" (healthy): the disease is label 0
    attributes = {"sex": SEX, "age_binary": AGE_BINARY, "age_5": AGE_5, "race": RACE}
    default_attributes = ("sex", "age_binary", "age_5", "race")
    options = {
        "demographics": Option(None, "path of 'CHEXPERT DEMO.xlsx' or its CSV export"),
        "frontal_only": Option(True, "keep frontal views only", parse_bool),
        "official_split": Option(True, "valid.csv as the test split (else random patient split)", parse_bool),
    }

    def _demographics(self, ctx: AdapterContext, opts: dict, explicit: bool) -> tuple[pd.DataFrame, Path] | None:
        if opts["demographics"]:
            path = Path(opts["demographics"]).expanduser()
            if not path.is_file():
                raise DataError(f"{self.title}: demographics file '{path}' (option 'demographics') does not exist")
        else:
            names = ["CHEXPERT DEMO.xlsx", "CHEXPERT DEMO.csv", "CHEXPERT_DEMO.csv"]
            path = find_file(ctx.root, names, dataset=self.title, what="demographics file", required=False)
            if path is None and ctx.root.parent != ctx.root:
                path = find_file(ctx.root.parent, names, dataset=self.title, what="demographics file",
                                 depth=0, required=False)
            if path is None:
                msg = (f"{self.title}: the race attribute needs the demographics file 'CHEXPERT DEMO.xlsx' "
                       f"(or its CSV export 'CHEXPERT DEMO.csv') with columns PATIENT, PRIMARY_RACE, under "
                       f"'{ctx.root}' or its parent, or --option demographics=PATH")
                if explicit:
                    raise DataError(msg)
                warn(msg + "; preparing without 'race'")
                return None
        demo = read_table(path, dataset=self.title)
        require_columns(demo, ["PATIENT", "PRIMARY_RACE"], path, dataset=self.title)
        return demo, path

    def load(self, ctx: AdapterContext) -> AdapterResult:
        opts = self.resolve_options(ctx.options)
        wanted = self.requested_attributes(ctx)
        drops = DropLog()
        train_path = find_file(ctx.root, ["train.csv"], dataset=self.title, what="label file")
        base = train_path.parent
        valid_path = find_file(base, ["valid.csv"], dataset=self.title, what="label file", depth=0)
        frames = [self._label_file(ctx, path, base, official, wanted)
                  for path, official in ((train_path, None), (valid_path, "test"))]
        table = pd.concat(frames, ignore_index=True)
        table = drops.drop(table, table["label"] == -1, "no_finding_uncertain")
        if opts["frontal_only"]:
            table = drops.drop(table, table["frontal"] == 0, "lateral_view")
        table["label"] = table["label"].astype(int)

        attributes = {a: self.attributes[a] for a in wanted}
        extra = {"files": [str(train_path), str(valid_path)], "label_rule": "No Finding == 1 (blank = 0, -1 dropped)",
                 "frontal_only": opts["frontal_only"]}
        if "race" in wanted and not self._add_race(table, ctx, opts, extra):
            attributes.pop("race")
        if opts["official_split"]:
            table["split"] = split_official_and_random(table, table["official"], ctx.fractions, ctx.seed,
                                                       stratify=[*attributes, "label"])
            policy = "official"
            extra["split_rule"] = "valid.csv -> test; train.csv split by patient into train/val"
        else:
            policy = "random"
        table = table.drop(columns=["official", "frontal"])
        extra["dropped"] = drops.records
        return AdapterResult(table=table, attributes=attributes, label_names=self.label_names,
                             split_policy=policy, extra=extra)

    def _label_file(self, ctx: AdapterContext, path: Path, base: Path, official: str | None,
                    wanted: list[str]) -> pd.DataFrame:
        """One of train.csv / valid.csv as manifest rows (``official``: the split its rows keep)."""
        df = read_table(path, dataset=self.title)
        require_columns(df, ["Path", "Sex", "Age", "Frontal/Lateral", "No Finding"], path, dataset=self.title)
        nf = pd.to_numeric(df["No Finding"], errors="coerce")
        bad = sorted(set(df.loc[nf.notna() & ~nf.isin([0, 1, -1]), "No Finding"].astype(str))
                     | set(df.loc[nf.isna() & df["No Finding"].notna(), "No Finding"].astype(str)))
        if bad:
            raise DataError(f"{self.title}: '{path}' column 'No Finding' has unexpected value(s) {bad[:12]}; "
                            "expected 1, 0, -1 or blank")
        view = map_values(df["Frontal/Lateral"], {"frontal": 1, "lateral": 0}, dataset=self.title,
                          path=path, column="Frontal/Lateral", missing_ok=False)
        pid = df["Path"].astype(str).str.extract(r"(patient\d+)", flags=re.IGNORECASE)[0]
        if pid.isna().any():
            raise DataError(f"{self.title}: '{path}' column 'Path' has values without a patientNNNNN "
                            f"folder, e.g. {df.loc[pid.isna(), 'Path'].head(3).tolist()}")
        t = pd.DataFrame({"image": _image_paths(df["Path"], ctx.rel(base)), "label": nf.fillna(0).to_numpy(),
                          "patient_id": pid.to_numpy(), "frontal": view.to_numpy(), "official": official})
        if "sex" in wanted:
            t["sex"] = map_values(df["Sex"], {"male": 0, "female": 1, "unknown": None}, dataset=self.title,
                                  path=path, column="Sex").to_numpy()
        if {"age_binary", "age_5"} & set(wanted):
            add_age_columns(t, numeric_age(df["Age"], dataset=self.title, path=path, column="Age"), wanted)
        return t

    def _add_race(self, table: pd.DataFrame, ctx: AdapterContext, opts: dict, extra: dict) -> bool:
        """Race per patient from the demographics file; False when it is absent (and not asked for)."""
        found = self._demographics(ctx, opts, explicit=ctx.attributes is not None)
        if found is None:
            return False
        demo, demo_path = found
        race = map_with(demo["PRIMARY_RACE"], chexpert_race, dataset=self.title, path=demo_path,
                        column="PRIMARY_RACE", expected="White/Black/Asian/other race text or Unknown")
        by_patient = pd.Series(race.to_numpy(), index=demo["PATIENT"].astype(str).str.strip().str.lower())
        by_patient = by_patient[~by_patient.index.duplicated()]
        table["race"] = table["patient_id"].str.lower().map(by_patient).astype(float).to_numpy()
        extra["demographics"] = str(demo_path)
        return True


def _image_paths(paths: pd.Series, rel_base: str) -> list[str]:
    """Image paths relative to the dataset root; the leading "CheXpert-v1.0[-small]/" is dropped."""
    out = []
    for p in paths.astype(str):
        parts = Path(p).parts
        if parts and parts[0].lower().startswith("chexpert"):
            parts = parts[1:]
        out.append(os.path.normpath(os.path.join(rel_base, *parts)))
    return out
