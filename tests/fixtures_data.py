"""Tiny copies of public datasets in their published layouts, for the adapter tests.

Each builder writes, under a temporary folder, the dataset's metadata files (published names
and columns) and a handful of small generated images, and returns a :class:`Fixture` whose
``expected`` table says, per image path relative to the root, the label and attribute codes
the adapter should produce (rows the adapter should drop are absent).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


@dataclass
class Fixture:
    root: Path
    expected: pd.DataFrame          # index: image path relative to root; columns: label, attributes
    options: dict


def write_image(path: Path, seed: int, size: tuple[int, int] = (48, 40), mode: str = "RGB") -> None:
    """A small noisy image (width, height) in the format given by the suffix."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    arr = rng.integers(0, 255, size=shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)


def _expected(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).set_index("image")


def _age_codes(age: float) -> dict:
    return {"age_binary": int(age >= 60), "age_5": int(min(age // 20, 4))}


# ---------------------------------------------------------------------------------------------


def build_ham10000(root: Path, n_lesions: int = 12) -> Fixture:
    """HAM10000_metadata.csv + HAM10000_images_part_1/2; some lesions have two images."""
    dx_cycle = ["mel", "nv", "akiec", "bkl", "bcc", "nv", "df", "vasc"]
    rows, exp = [], []
    img = 24306
    for i in range(n_lesions):
        lesion = f"HAM_{i:07d}"
        dx = dx_cycle[i % len(dx_cycle)]
        sex = ["male", "female"][i % 2] if i != 5 else "unknown"
        age = float(20 + 5 * i) if i != 7 else np.nan
        for _ in range(1 + (i % 3 == 0)):
            image_id = f"ISIC_00{img}"
            part = "HAM10000_images_part_1" if img % 2 else "HAM10000_images_part_2"
            write_image(root / part / f"{image_id}.jpg", img)
            rows.append({"lesion_id": lesion, "image_id": image_id, "dx": dx, "dx_type": "histo",
                         "age": age, "sex": sex, "localization": "back"})
            if sex != "unknown" and not np.isnan(age):
                exp.append({"image": f"{part}/{image_id}.jpg", "label": int(dx in ("mel", "akiec")),
                            "sex": 0 if sex == "male" else 1, **_age_codes(age), "patient_id": lesion})
            img += 1
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    return Fixture(root, _expected(exp), {})


def build_fitzpatrick17k(root: Path, n: int = 18) -> Fixture:
    """fitzpatrick17k.csv + images/<md5hash>.jpg."""
    parts = ["malignant", "benign", "non-neoplastic"]
    rows, exp = [], []
    for i in range(n):
        md5 = f"{i:032x}"
        scale = (i % 6) + 1 if i != 4 else -1
        part = parts[i % 3]
        write_image(root / "images" / f"{md5}.jpg", i)
        rows.append({"md5hash": md5, "fitzpatrick_scale": scale, "fitzpatrick_centaur": scale,
                     "label": "melanoma", "nine_partition_label": "x", "three_partition_label": part,
                     "qc": np.nan, "url": f"https://example.org/{md5}.jpg", "url_alphanum": md5})
        if scale != -1:
            exp.append({"image": f"images/{md5}.jpg", "label": int(part == "malignant"),
                        "skin_type": scale - 1, "skin_type_binary": int(scale >= 4), "patient_id": md5})
    pd.DataFrame(rows).to_csv(root / "fitzpatrick17k.csv", index=False)
    return Fixture(root, _expected(exp), {})


def build_papila(root: Path, n_patients: int = 10, title_row: bool = True) -> Fixture:
    """PapilaDB/ClinicalData/patient_data_od.csv/os.csv (CSV exports) + FundusImages/RETxxxOD.jpg."""
    base = root / "PapilaDB"
    exp = []
    for eye in ("OD", "OS"):
        rows = []
        for i in range(n_patients):
            pid = f"{2 * i + 2:03d}"
            diag = [0, 1, 0, 2, 1][(i + (eye == "OS")) % 5]
            gender, age = i % 2, 30 + 5 * i
            rows.append({"ID": f"#{pid}", "Age": age, "Gender": gender, "Diagnosis": diag,
                         "dioptre_1": 0.5, "dioptre_2": 0.25, "astigmatism": 0, "Phakic/Pseudophakic": 0,
                         "Pneumatic": 14, "Perkins": 15, "Pachymetry": 540, "Axial_Length": 23.5, "VF_MD": -1.0})
            write_image(base / "FundusImages" / f"RET{pid}{eye}.jpg", 1000 * (eye == "OS") + i)
            if diag != 2:
                exp.append({"image": f"PapilaDB/FundusImages/RET{pid}{eye}.jpg", "label": diag, "sex": gender,
                            **_age_codes(age), "patient_id": pid})
        df = pd.DataFrame(rows)
        path = base / "ClinicalData" / f"patient_data_{eye.lower()}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = df.to_csv(index=False)
        if title_row:   # the published sheet has a title line above the column names
            text = f"Clinical data {eye}" + "," * (df.shape[1] - 1) + "\n" + text
        path.write_text(text)
    return Fixture(root, _expected(exp), {})


def build_chexpert(root: Path, n_train: int = 12, n_valid: int = 4) -> Fixture:
    """CheXpert-v1.0-small/{train,valid}.csv + images, and CHEXPERT DEMO.csv beside the folder."""
    base = root / "CheXpert-v1.0-small"
    races = ["White", "Black or African American", "Asian, non-Hispanic", "Other", "White, non-Hispanic",
             "Unknown", "Native Hawaiian or Other Pacific Islander", "Black, Hispanic"]
    race_code = {"White": 0, "Black or African American": 1, "Asian, non-Hispanic": 2, "Other": 3,
                 "White, non-Hispanic": 0, "Native Hawaiian or Other Pacific Islander": 3, "Black, Hispanic": 1}
    demo, exp = [], []
    for split, n, offset in (("train", n_train, 1), ("valid", n_valid, 64541)):
        rows = []
        for i in range(n):
            pid = f"patient{offset + i:05d}"
            sex = ["Male", "Female"][i % 2]
            age = 25 + 6 * i
            race = races[(i + offset) % len(races)]
            demo.append({"PATIENT": pid, "GENDER": sex, "AGE_AT_CXR": age, "PRIMARY_RACE": race,
                         "ETHNICITY": "Non-Hispanic/Non-Latino"})
            views = [("view1_frontal.jpg", "Frontal")] + ([("view2_lateral.jpg", "Lateral")] if i % 4 == 0 else [])
            for v, (fname, fl) in enumerate(views):
                rel = f"{split}/{pid}/study1/{fname}"
                write_image(base / rel, offset + 10 * i + v, mode="L")
                nf = [1.0, np.nan, 1.0, 0.0, np.nan, -1.0][i % 6]
                rows.append({"Path": f"CheXpert-v1.0-small/{rel}", "Sex": sex, "Age": age, "Frontal/Lateral": fl,
                             "AP/PA": "AP" if fl == "Frontal" else np.nan, "No Finding": nf,
                             "Cardiomegaly": np.nan, "Pleural Effusion": 1.0})
                if fl == "Frontal" and nf != -1.0 and race in race_code:
                    exp.append({"image": f"CheXpert-v1.0-small/{rel}", "label": int(nf == 1.0),
                                "sex": i % 2, **_age_codes(age), "race": race_code[race], "patient_id": pid,
                                "official": "test" if split == "valid" else "trainval"})
        pd.DataFrame(rows).to_csv(base / f"{split}.csv", index=False)
    pd.DataFrame(demo).to_csv(root / "CHEXPERT DEMO.csv", index=False)
    return Fixture(root, _expected(exp), {})


def build_mimic_cxr(root: Path, n_subjects: int = 10) -> Fixture:
    """mimic-cxr-jpg/2.0.0/{metadata,chexpert,split}.csv.gz + files/, and MIMIC-IV hosp/ tables."""
    base = root / "mimic-cxr-jpg" / "2.0.0"
    hosp = root / "mimiciv" / "2.2" / "hosp"
    hosp.mkdir(parents=True)
    races = ["WHITE", "BLACK/AFRICAN AMERICAN", "ASIAN - CHINESE", "HISPANIC/LATINO - PUERTO RICAN", "OTHER",
             "UNKNOWN", "WHITE - OTHER EUROPEAN", "PORTUGUESE", "BLACK/CAPE VERDEAN", "ASIAN"]
    race_code = {"WHITE": 0, "BLACK/AFRICAN AMERICAN": 1, "ASIAN - CHINESE": 2, "HISPANIC/LATINO - PUERTO RICAN": 3,
                 "OTHER": 4, "WHITE - OTHER EUROPEAN": 0, "PORTUGUESE": 0, "BLACK/CAPE VERDEAN": 1, "ASIAN": 2}
    meta, labels, splits, pats, adms, exp = [], [], [], [], [], []
    for i in range(n_subjects):
        sid = 10000032 + 1000 * i
        anchor_age, anchor_year = 40 + 4 * i, 2150
        pats.append({"subject_id": sid, "gender": "MF"[i % 2], "anchor_age": anchor_age, "anchor_year": anchor_year,
                     "anchor_year_group": "2014 - 2016", "dod": np.nan})
        race = races[i % len(races)]
        adms.append({"subject_id": sid, "hadm_id": 20000000 + i, "admittime": "2150-01-01", "race": race})
        if i == 3:   # a conflicting second admission: race unknown for this patient
            adms.append({"subject_id": sid, "hadm_id": 29000000, "admittime": "2151-01-01", "race": "WHITE"})
        split = ["train"] * 6 + ["validate"] * 2 + ["test"] * 2
        for s in range(2):
            study = 50000000 + 10 * i + s
            nf = [1.0, np.nan, -1.0, 0.0][(i + s) % 4]
            labels.append({"subject_id": sid, "study_id": study, "No Finding": nf, "Cardiomegaly": np.nan})
            year = anchor_year + s * 3
            for v, view in enumerate(["PA", "LATERAL"] if s == 0 else ["AP"]):
                dicom = f"{i:08x}-{s:08x}-{v:08x}-00000000-00000000"
                rel = f"files/p{str(sid)[:2]}/p{sid}/s{study}/{dicom}.jpg"
                write_image(base / rel, 7 * i + 3 * s + v, mode="L")
                meta.append({"dicom_id": dicom, "subject_id": sid, "study_id": study,
                             "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
                             "Rows": 40, "Columns": 48, "StudyDate": int(f"{year}0506"), "StudyTime": 120000.0})
                splits.append({"dicom_id": dicom, "study_id": study, "subject_id": sid, "split": split[i]})
                if view != "LATERAL" and nf != -1.0 and race in race_code and i != 3:
                    age = anchor_age + (year - anchor_year)
                    exp.append({"image": f"mimic-cxr-jpg/2.0.0/{rel}", "label": int(nf == 1.0), "sex": i % 2,
                                **_age_codes(age), "race": race_code[race], "patient_id": str(sid),
                                "split": {"train": "train", "validate": "val", "test": "test"}[split[i]]})
    pd.DataFrame(meta).to_csv(base / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    pd.DataFrame(labels).to_csv(base / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    pd.DataFrame(splits).to_csv(base / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    pd.DataFrame(pats).to_csv(hosp / "patients.csv.gz", index=False)
    pd.DataFrame(adms).to_csv(hosp / "admissions.csv.gz", index=False)
    return Fixture(root, _expected(exp), {"mimic_iv": str(root / "mimiciv" / "2.2")})


def build_ol3i(root: Path, n: int = 16, numeric_sex: bool = False) -> Fixture:
    """clinical_data.csv + per-slice exports l3_slices/<anon_id>.npy (HU, int16)."""
    rows, exp = [], []
    sets = ["train"] * 10 + ["val"] * 3 + ["test"] * 3
    rng = np.random.default_rng(0)
    for i in range(n):
        aid = f"{i:016x}"
        sex = ("M", "F")[i % 2]
        age = 35 + 3 * i
        label = [0, 1, 0, 0][i % 4] if i != 6 else np.nan
        rows.append({"anon_id": aid, "age": age, "sex": (i % 2) if numeric_sex else sex, "bmi": 25.0,
                     "smoker": 0, "label_1y": label, "set_1y": sets[i % len(sets)], "label_5y": 1, "set_5y": "train"})
        slice_ = rng.integers(-1000, 1000, size=(40, 48)).astype(np.int16)
        (root / "l3_slices").mkdir(parents=True, exist_ok=True)
        np.save(root / "l3_slices" / f"{aid}.npy", slice_)
        if not np.isnan(label):
            exp.append({"image": f"l3_slices/{aid}.npy", "label": int(label), "sex": i % 2, **_age_codes(age),
                        "patient_id": aid, "split": sets[i % len(sets)]})
    pd.DataFrame(rows).to_csv(root / "clinical_data.csv", index=False)
    return Fixture(root, _expected(exp), {})


def build_harvard_gf(root: Path, counts: tuple[int, int, int] = (12, 4, 6), race_as_text: bool = False,
                     pickled_text: bool = False) -> Fixture:
    """Training/Validation/Test folders of data_XXXX.npz with rnflt, glaucoma, race, male, age;
    ``pickled_text``: race as text in an object array, which numpy stores pickled."""
    exp = []
    k = 1
    names = {0: "Asian", 1: "Black or African American", 2: "White or Caucasian"}
    for folder, split, n in (("Training", "train", counts[0]), ("Validation", "val", counts[1]),
                             ("Test", "test", counts[2])):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            rng = np.random.default_rng(k)
            race = k % 3
            text = race_as_text or pickled_text
            fields = {"rnflt": rng.uniform(-2, 350, size=(40, 48)).astype(np.float32),
                      "glaucoma": np.array(float((k // 2) % 2)),
                      "race": _race_field(names[race] if text else race, pickled_text),
                      "male": np.array(float(k % 2)), "age": np.array(40.0 + 2 * k), "md": np.array(-1.5),
                      "tds": np.zeros(52, np.float32), "hispanic": np.array(0)}
            path = root / folder / f"data_{k:04d}.npz"
            np.savez_compressed(path, **fields)
            exp.append({"image": f"{folder}/data_{k:04d}.npz", "label": (k // 2) % 2, "race": race,
                        "sex": 0 if k % 2 else 1, **_age_codes(40.0 + 2 * k), "patient_id": f"data_{k:04d}",
                        "split": split})
            k += 1
    return Fixture(root, _expected(exp), {})


def _race_field(value, pickled: bool) -> np.ndarray:
    return np.array(value, dtype=object) if pickled else np.array(value)


def write_analyze(img_path: Path, volume: np.ndarray) -> None:
    """An Analyze 7.5 .hdr/.img pair, big-endian int16, as OASIS ships them."""
    x, y, z = volume.shape
    hdr = bytearray(348)
    struct.pack_into(">i", hdr, 0, 348)
    struct.pack_into(">8h", hdr, 40, 4, x, y, z, 1, 0, 0, 0)
    struct.pack_into(">h", hdr, 70, 4)
    struct.pack_into(">h", hdr, 72, 16)
    struct.pack_into(">8f", hdr, 76, 1.0, 1.0, 1.0, 1.0, 0, 0, 0, 0)
    struct.pack_into(">f", hdr, 108, 0.0)
    img_path.parent.mkdir(parents=True, exist_ok=True)
    img_path.with_suffix(".hdr").write_bytes(bytes(hdr))
    img_path.write_bytes(volume.astype(">i2").tobytes(order="F"))


def build_oasis1(root: Path, n: int = 14) -> Fixture:
    """oasis_cross-sectional.csv + disc1/OAS1_xxxx_MR1/PROCESSED/MPRAGE/T88_111/*_t88_masked_gfc.img/.hdr."""
    rows, exp = [], []
    cdrs = [0.0, 0.5, 1.0, 0.0, 2.0, 0.0]
    for i in range(n):
        sid = f"OAS1_{i + 1:04d}_MR1"
        age = 20 + 6 * i
        cdr = np.nan if age < 60 else cdrs[i % len(cdrs)]
        rows.append({"ID": sid, "M/F": "MF"[i % 2], "Hand": "R", "Age": age, "Educ": 3, "SES": 2, "MMSE": 29,
                     "CDR": cdr, "eTIV": 1500, "nWBV": 0.75, "ASF": 1.2, "Delay": np.nan})
        t88 = root / f"disc{1 + i // 8}" / sid / "PROCESSED" / "MPRAGE" / "T88_111"
        vol = np.random.default_rng(i).integers(0, 1200, size=(22, 26, 24)).astype(np.int16)
        write_analyze(t88 / f"{sid}_mpr_n4_anon_111_t88_masked_gfc.img", vol)
        rel = f"disc{1 + i // 8}/{sid}/PROCESSED/MPRAGE/T88_111/{sid}_mpr_n4_anon_111_t88_masked_gfc.img"
        exp.append({"image": rel, "label": int((0 if np.isnan(cdr) else cdr) > 0), "sex": i % 2, **_age_codes(age),
                    "patient_id": sid[:9]})
    # a reliability re-scan of subject 1: dropped by default
    rows.append({**rows[0], "ID": "OAS1_0001_MR2", "Delay": 30})
    write_analyze(root / "disc1" / "OAS1_0001_MR2" / "PROCESSED" / "MPRAGE" / "T88_111" /
                  "OAS1_0001_MR2_mpr_n4_anon_111_t88_masked_gfc.img",
                  np.ones((22, 26, 24), np.int16))
    pd.DataFrame(rows).to_csv(root / "oasis_cross-sectional.csv", index=False)
    return Fixture(root, _expected(exp), {"slice": "12"})


def build_generic(root: Path, n: int = 20) -> Fixture:
    """labels.csv (path, dx, age, sex, patient, split) + images/ of PNGs."""
    rows, exp = [], []
    for i in range(n):
        dx = ["mel", "nv", "akiec", "bcc"][i % 4]
        age = 15 + 4 * i
        sex = ["female", "male"][i % 2] if i != 3 else "unknown"
        path = f"images/img_{i:03d}.png"
        write_image(root / path, i, mode="L" if i % 2 else "RGB")
        rows.append({"path": path, "dx": dx, "age": age, "sex": sex, "patient": f"P{i // 2}"})
        if sex != "unknown":
            exp.append({"image": path, "label": int(dx in ("mel", "akiec")), "sex": 0 if sex == "female" else 1,
                        "age_binary": int(age >= 60), "patient_id": f"P{i // 2}"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return Fixture(root, _expected(exp), {"table": "labels.csv", "image_column": "path",
                                          "label": "dx in ['mel', 'akiec']", "patient_column": "patient"})


# ---------------------------------------------------------------------------------------------
# an already prepared dataset, for the label-semantics tests


#: per sex group: labels (1 = "no finding", i.e. healthy) and a model's P(label 1) for each image.
#: F calls 2 of 4 sick (label 0) images healthy, M none: FPR of label 1 0.5 vs 0.0 (gap 0.5), while the
#: FNR of label 1 is 0.0 vs 0.25 (gap 0.25), so the two definitions of underdiagnosis disagree.
CXR_ROWS = {
    "F": ([0, 0, 0, 0, 1, 1, 1, 1], [0.9, 0.7, 0.2, 0.1, 0.8, 0.9, 0.6, 0.7]),
    "M": ([0, 0, 0, 0, 1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.2, 0.9, 0.8, 0.7]),
}


def build_cxr_prepared(out: Path, disease_label: int = 0) -> tuple[str, np.ndarray]:
    """A tiny prepared chest X-ray-style dataset, label 1 = "no finding" (``disease_label`` 0 in
    dataset.json), every row in test; returns (its folder, the fixed model scores of its rows)."""
    from fairtune_ray.data.manifest import DatasetInfo, write_packed_dataset

    labels, sexes, scores = [], [], []
    for code, (y, s) in enumerate(CXR_ROWS.values()):
        labels += y
        scores += s
        sexes += [code] * len(y)
    n = len(labels)
    manifest = pd.DataFrame({"image": [f"cxr/{i}.png" for i in range(n)], "label": labels, "sex": sexes,
                             "patient_id": [f"p{i}" for i in range(n)], "split": "test"})
    info = DatasetInfo("cxr-style", {"sex": dict(enumerate(CXR_ROWS))}, label_names={0: "finding", 1: "no finding"},
                       disease_label=disease_label)
    images = (np.full((4, 4, 3), i, np.uint8) for i in range(n))
    write_packed_dataset(str(out), manifest, images, info)
    return str(out), np.asarray(scores)
