"""MIMIC-CXR-JPG chest radiographs (Johnson et al. 2019): "No Finding"; sex, age, race.

Obtained from PhysioNet (credentialed access): MIMIC-CXR-JPG v2.0.0/2.1.0
(https://physionet.org/content/mimic-cxr-jpg/) and, for demographics, MIMIC-IV's ``hosp``
module (https://physionet.org/content/mimiciv/). Expected (``.csv`` or the published ``.csv.gz``)::

    mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ViewPosition, StudyDate, ...
    mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, No Finding, ... (CheXpert labeler;
                                      ``--option labeler=negbio`` reads ...-negbio.csv.gz)
    mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split (train/validate/test)
    files/p10/p10000032/s50414267/<dicom_id>.jpg
    patients.csv.gz                   subject_id, gender (M/F), anchor_age, anchor_year
    admissions.csv.gz                 subject_id, race (MIMIC-IV >= 2.0; "ethnicity" in 1.0)

The MIMIC-IV files are searched below the root, or given with ``--option mimic_iv=FOLDER``.
Label: "No Finding" == 1 (blank = 0; -1 uncertain dropped; studies without a label row
dropped); label 1 is healthy, so dataset.json records ``disease_label: 0``. Views: PA and AP by
default (``--option views=PA,AP,LATERAL``). Age at the study: ``anchor_age + (study year -
anchor_year)`` (both dates share MIMIC's per-patient shift).
Race per patient from admissions (White, Black, Asian, Hispanic/Latino, Other); a patient with
conflicting recorded races is treated as unknown (counted). Split: the official split file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from fairtune_ray.data.adapters.base import (Adapter, AdapterContext, AdapterResult, DropLog, Option, parse_bool,
                                             warn)
from fairtune_ray.data.adapters.columns import (AGE_5, AGE_BINARY, SEX, UNEXPECTED, add_age_columns, map_values,
                                                map_with, numeric_age)
from fairtune_ray.data.adapters.registry import register_adapter
from fairtune_ray.data.adapters.tables import find_file, read_table, require_columns
from fairtune_ray.data.manifest import DataError

RACE = {0: "White", 1: "Black", 2: "Asian", 3: "Hispanic/Latino", 4: "Other"}
_SPLITS = {"train": "train", "validate": "val", "val": "val", "validation": "val", "test": "test"}


def mimic_race(text: str):
    if text in ("unknown", "unable to obtain", "patient declined to answer", "declined to answer"):
        return None
    if text.startswith("white") or text == "portuguese":
        return 0
    if text.startswith("black"):
        return 1
    if text.startswith("asian"):
        return 2
    if text.startswith("hispanic") or text == "south american":
        return 3
    if text in ("other", "multiple race/ethnicity", "american indian/alaska native",
                "native hawaiian or other pacific islander", "american indian/alaska native federally recognized tribe"):
        return 4
    return UNEXPECTED


def _names(stem: str) -> list[str]:
    return [f"{stem}.csv.gz", f"{stem}.csv"]


@register_adapter("mimic-cxr", aliases=("mimic", "mimic-cxr-jpg", "mimic_cxr"))
class MimicCxrAdapter(Adapter):
    """MIMIC-CXR-JPG chest X-rays: No Finding; sex, age, race (from MIMIC-IV)."""

    title = "MIMIC-CXR-JPG"
    source_url = "https://physionet.org/content/mimic-cxr-jpg/"
    label_names = {0: "finding", 1: "no finding"}
    disease_label = 0  # label 1 is "no finding" (healthy): the disease is label 0
    attributes = {"sex": SEX, "age_binary": AGE_BINARY, "age_5": AGE_5, "race": RACE}
    default_attributes = ("sex", "age_binary", "age_5", "race")
    options = {
        "mimic_iv": Option(None, "folder holding MIMIC-IV patients.csv(.gz) and admissions.csv(.gz)"),
        "labeler": Option("chexpert", "label file: chexpert or negbio",
                          lambda s: {"chexpert": "chexpert", "negbio": "negbio"}[str(s).lower()]),
        "views": Option("PA,AP", "comma-separated ViewPosition values to keep", str),
        "official_split": Option(True, "use mimic-cxr-2.0.0-split.csv (else random patient split)", parse_bool),
    }

    def _mimic_iv(self, ctx: AdapterContext, opts: dict, stem: str, required: bool) -> Path | None:
        roots = [Path(opts["mimic_iv"]).expanduser()] if opts["mimic_iv"] else [ctx.root]
        if opts["mimic_iv"] and not roots[0].is_dir():
            raise DataError(f"{self.title}: option mimic_iv: '{roots[0]}' is not a folder")
        return find_file(roots[0], _names(stem), dataset=self.title, what="MIMIC-IV file", depth=3,
                         required=required)

    def load(self, ctx: AdapterContext) -> AdapterResult:
        opts = self.resolve_options(ctx.options)
        wanted = self.requested_attributes(ctx)
        drops = DropLog()
        meta_path = find_file(ctx.root, _names("mimic-cxr-2.0.0-metadata"), dataset=self.title,
                              what="metadata file", depth=3)
        base = meta_path.parent
        label_path = find_file(base, _names(f"mimic-cxr-2.0.0-{opts['labeler']}"), dataset=self.title,
                               what="label file", depth=0)
        meta = read_table(meta_path, dataset=self.title, dtype={"dicom_id": str})
        require_columns(meta, ["dicom_id", "subject_id", "study_id", "ViewPosition"], meta_path, dataset=self.title)
        table = self._image_table(ctx, meta, base, self._study_labels(label_path))
        views = [v.strip().upper() for v in opts["views"].split(",") if v.strip()]
        table = drops.drop(table, ~table["view"].isin(views), f"view_not_{'_'.join(views)}")
        table = drops.drop(table, table["label"].isna(), "study_without_label")
        table = drops.drop(table, table["label"] == -1, "no_finding_uncertain")
        table["label"] = table["label"].astype(int)

        attributes = {a: self.attributes[a] for a in wanted}
        extra: dict = {"files": [str(meta_path), str(label_path)], "label_rule": "No Finding == 1 (blank = 0, -1 dropped)",
                       "views": views}
        if {"sex", "age_binary", "age_5"} & set(wanted):
            extra["patients"] = str(self._add_sex_and_age(table, ctx, opts, wanted))
        if "race" in wanted and not self._add_race(table, ctx, opts, extra, explicit=ctx.attributes is not None):
            attributes.pop("race")
        policy = "random"
        if opts["official_split"]:
            table = self._official_split(table, base, drops, extra)
            policy = "official"
        table = table.drop(columns=["view", "study_year", "dicom_id"])
        extra["dropped"] = drops.records
        return AdapterResult(table=table, attributes=attributes, label_names=self.label_names,
                             split_policy=policy, extra=extra)

    def _study_labels(self, label_path: Path) -> pd.Series:
        """"No Finding" per study_id: 1, 0 (blank) or -1 (uncertain); other values are an error."""
        labels = read_table(label_path, dataset=self.title)
        require_columns(labels, ["subject_id", "study_id", "No Finding"], label_path, dataset=self.title)
        nf = pd.to_numeric(labels["No Finding"], errors="coerce")
        bad = sorted(set(labels.loc[(nf.notna() & ~nf.isin([0, 1, -1])) | (nf.isna() & labels["No Finding"].notna()),
                                    "No Finding"].astype(str)))
        if bad:
            raise DataError(f"{self.title}: '{label_path}' column 'No Finding' has unexpected value(s) {bad[:12]}; "
                            "expected 1, 0, -1 or blank")
        study_label = pd.Series(nf.fillna(0).to_numpy(), index=labels["study_id"].astype("int64"))
        return study_label[~study_label.index.duplicated()]

    @staticmethod
    def _image_table(ctx: AdapterContext, meta: pd.DataFrame, base: Path, study_label: pd.Series) -> pd.DataFrame:
        """One row per DICOM image: its JPEG path, study label, patient, view and study year."""
        sid = meta["subject_id"].astype("int64")
        study = meta["study_id"].astype("int64")
        files = os.path.join(ctx.rel(base), "files")
        return pd.DataFrame({
            "image": [os.path.normpath(f"{files}/p{str(s)[:2]}/p{s}/s{st}/{d}.jpg")
                      for s, st, d in zip(sid, study, meta["dicom_id"].astype(str))],
            "label": study.map(study_label).to_numpy(),
            "patient_id": sid.astype(str).to_numpy(),
            "view": meta["ViewPosition"].fillna("").astype(str).str.upper().to_numpy(),
            "study_year": (pd.to_numeric(meta["StudyDate"], errors="coerce") // 10000).to_numpy()
            if "StudyDate" in meta.columns else np.nan,
            "dicom_id": meta["dicom_id"].astype(str).to_numpy(),
        })

    def _add_sex_and_age(self, table: pd.DataFrame, ctx: AdapterContext, opts: dict, wanted: list[str]) -> Path:
        """Sex and age at the study from MIMIC-IV patients (anchor_age shifted to the study year)."""
        p_path = self._mimic_iv(ctx, opts, "patients", required=True)
        pats = read_table(p_path, dataset=self.title)
        require_columns(pats, ["subject_id", "gender", "anchor_age", "anchor_year"], p_path, dataset=self.title)
        pats = pats.drop_duplicates("subject_id").set_index(pats["subject_id"].astype("int64").astype(str))
        sex = map_values(pats["gender"], {"m": 0, "f": 1}, dataset=self.title, path=p_path, column="gender")
        anchor_age = numeric_age(pats["anchor_age"], dataset=self.title, path=p_path, column="anchor_age")
        anchor_year = pd.to_numeric(pats["anchor_year"], errors="coerce")
        pid = table["patient_id"]
        age = pid.map(anchor_age) + (table["study_year"] - pid.map(anchor_year)).fillna(0)
        if "sex" in wanted:
            table["sex"] = pid.map(sex).astype(float).to_numpy()
        add_age_columns(table, age.astype(float), wanted)
        return p_path

    def _add_race(self, table: pd.DataFrame, ctx: AdapterContext, opts: dict, extra: dict, explicit: bool) -> bool:
        """Race per patient from MIMIC-IV admissions; False (with a warning) when the file is absent."""
        a_path = self._mimic_iv(ctx, opts, "admissions", required=explicit)
        if a_path is None:
            warn(f"{self.title}: the race attribute needs MIMIC-IV 'admissions.csv.gz' (column race); "
                 "not found, preparing without 'race' (give --option mimic_iv=FOLDER)")
            return False
        adm = read_table(a_path, dataset=self.title)
        col = "race" if "race" in adm.columns else "ethnicity"
        require_columns(adm, ["subject_id", col], a_path, dataset=self.title)
        code = map_with(adm[col], mimic_race, dataset=self.title, path=a_path, column=col,
                        expected="MIMIC-IV race categories (WHITE, BLACK/..., ASIAN - ..., HISPANIC/LATINO - ..., OTHER, UNKNOWN, ...)")
        per = pd.DataFrame({"s": adm["subject_id"].astype("int64").astype(str), "r": code}).dropna()
        n_codes = per.groupby("s")["r"].nunique()
        first = per.groupby("s")["r"].first()
        race = first[n_codes == 1]
        extra["race_conflicting_patients"] = int((n_codes > 1).sum())
        table["race"] = table["patient_id"].map(race).astype(float).to_numpy()
        extra["admissions"] = str(a_path)
        return True

    def _official_split(self, table: pd.DataFrame, base: Path, drops: DropLog, extra: dict) -> pd.DataFrame:
        """The split of each image from mimic-cxr-2.0.0-split; images not listed there are dropped."""
        split_path = find_file(base, _names("mimic-cxr-2.0.0-split"), dataset=self.title,
                               what="split file", depth=0)
        sp = read_table(split_path, dataset=self.title, dtype={"dicom_id": str})
        require_columns(sp, ["dicom_id", "split"], split_path, dataset=self.title)
        coded = map_values(sp["split"], {k: i for i, k in enumerate(_SPLITS)}, dataset=self.title,
                           path=split_path, column="split", missing_ok=False)
        names = list(_SPLITS.values())
        by_dicom = pd.Series([names[int(c)] for c in coded], index=sp["dicom_id"].astype(str))
        by_dicom = by_dicom[~by_dicom.index.duplicated()]
        table["split"] = table["dicom_id"].map(by_dicom)
        extra["split_file"] = str(split_path)
        return drops.drop(table, table["split"].isna(), "not_in_split_file")
