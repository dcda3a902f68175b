"""OASIS-1 cross-sectional brain MRI (Marcus et al. 2007): dementia (CDR > 0); sex, age.

Obtained from https://www.oasis-brains.org/ (OASIS-1: the "oasis_cross-sectional.csv" sheet and
the disc1 ... disc12 tarballs). Expected::

    oasis_cross-sectional.csv   columns ID (OAS1_0001_MR1), M/F, Hand, Age, Educ, SES, MMSE, CDR,
                                eTIV, nWBV, ASF, Delay
    disc1/OAS1_0001_MR1/PROCESSED/MPRAGE/T88_111/
        OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc.img/.hdr   (Analyze 7.5, 176x208x176)
        OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc_tra_90.gif (OASIS's own axial snapshot)

The image is one 2-D slice of the atlas-registered, bias-corrected, brain-masked volume
(``t88_masked_gfc``): by default the axial slice 90, the one OASIS publishes as ``_tra_90.gif``
(``--option plane=axial|coronal|sagittal --option slice=N``; ``--option volume=gfc`` uses the
unmasked volume). When a session has no ``.img`` volume the ``_tra_90.gif`` snapshot is used
(``--option source=gif`` forces it). Intensities are scaled per slice to uint8 (0.5-99.5 %ile).

Label: CDR > 0 (0.5 very mild, 1 mild, 2 moderate dementia). OASIS rated CDR for participants
aged 60+ only; younger participants (CDR blank) are non-demented controls and get label 0
(``--option cdr_missing=drop`` drops them instead). The 20 reliability re-scans (``_MR2``) are
dropped unless ``--option include_reliability=true``. Patient id: ``OAS1_xxxx``.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pandas as pd

from fairtune_ray.data.adapters.base import Adapter, AdapterContext, AdapterResult, DropLog, Option, parse_bool
from fairtune_ray.data.adapters.columns import AGE_5, AGE_BINARY, SEX, add_age_columns, map_values, numeric_age
from fairtune_ray.data.adapters.readers import read_analyze_slice, read_pil
from fairtune_ray.data.adapters.registry import register_adapter
from fairtune_ray.data.adapters.tables import find_file, read_table, require_columns
from fairtune_ray.data.manifest import DataError

_SESSION = re.compile(r"^(OAS1_\d{4}_MR\d)", re.IGNORECASE)


def _choice(*allowed: str):
    def parse(text: str) -> str:
        t = str(text).lower()
        if t not in allowed:
            raise ValueError(f"expected one of {list(allowed)}, got {text!r}")
        return t
    return parse


def index_oasis(root: Path, volume: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """Session ID -> processed volume (.img) and -> axial snapshot (.gif), from one walk."""
    vols: dict[str, Path] = {}
    gifs: dict[str, Path] = {}
    vol_suffixes = (f"_t88_{volume}.img", f"_t88_{volume}.img.gz")
    gif_suffixes = (f"_t88_{volume}_tra_90.gif",)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in filenames:
            m = _SESSION.match(f)
            if not m:
                continue
            low = f.lower()
            if low.endswith(vol_suffixes):
                vols.setdefault(m.group(1).upper(), Path(dirpath) / f)
            elif low.endswith(gif_suffixes):
                gifs.setdefault(m.group(1).upper(), Path(dirpath) / f)
    return vols, gifs


@register_adapter("oasis-1", aliases=("oasis", "oasis1", "oasis_1"))
class Oasis1Adapter(Adapter):
    """OASIS-1 brain MRI slices: dementia (CDR > 0); sex, age."""

    title = "OASIS-1"
    source_url = "https://www.oasis-brains.org/"
    label_names = {0: "non-demented", 1: "dementia (CDR > 0)"}
    disease_label = 1  # dementia
    attributes = {"sex": SEX, "age_binary": AGE_BINARY, "age_5": AGE_5}
    default_attributes = ("sex", "age_binary", "age_5")
    options = {
        "source": Option("auto", "volume, gif or auto (volume where present, else the gif snapshot)",
                         _choice("auto", "volume", "gif")),
        "volume": Option("masked_gfc", "which T88 volume: masked_gfc or gfc", _choice("masked_gfc", "gfc")),
        "plane": Option("axial", "slice plane: axial, coronal or sagittal", _choice("axial", "coronal", "sagittal")),
        "slice": Option(90, "slice index in that plane", int),
        "cdr_missing": Option("healthy", "participants without CDR: healthy (label 0) or drop",
                              _choice("healthy", "drop")),
        "include_reliability": Option(False, "keep the MR2 reliability re-scans", parse_bool),
    }

    def load(self, ctx: AdapterContext) -> AdapterResult:
        opts = self.resolve_options(ctx.options)
        wanted = self.requested_attributes(ctx)
        drops = DropLog()
        meta_path = find_file(ctx.root, ["oasis_cross-sectional.csv", "oasis_cross-sectional.xlsx"],
                              dataset=self.title, what="metadata file")
        df = read_table(meta_path, dataset=self.title)
        require_columns(df, ["ID", "M/F", "Age", "CDR"], meta_path, dataset=self.title)
        df = df[df["ID"].notna()].reset_index(drop=True)
        cdr = map_values(df["CDR"], {0: 0, 0.5: 1, 1: 1, 2: 1, 3: 1}, dataset=self.title, path=meta_path,
                         column="CDR", missing_ok=False)
        if opts["cdr_missing"] == "healthy":
            cdr = cdr.fillna(0)
        ids = df["ID"].astype(str).str.strip().str.upper()
        bad_ids = ids[~ids.str.match(_SESSION)]
        if len(bad_ids):
            raise DataError(f"{self.title}: '{meta_path}' column 'ID' has value(s) not like OAS1_0001_MR1: "
                            f"{bad_ids.head(5).tolist()}")

        vols, gifs = index_oasis(meta_path.parent, opts["volume"])
        slice_kw = {"plane": opts["plane"], "index": opts["slice"]}
        mode = opts["source"]
        if mode == "auto":      # one preprocessing for the whole dataset: volumes if any are present
            mode = "volume" if vols or not gifs else "gif"
        if mode == "gif" and (opts["plane"], opts["slice"]) != ("axial", 90):
            raise DataError(f"{self.title}: only the gif snapshots (axial slice 90) were found; options "
                            "plane/slice need the .img/.hdr volumes (source=volume)")
        images = []
        for sid in ids:
            if mode == "gif":
                default = meta_path.parent / f"{sid}_mpr_n4_anon_111_t88_{opts['volume']}_tra_90.gif"
                images.append(ctx.rel(gifs.get(sid, default)))
            else:
                default = meta_path.parent / sid / "PROCESSED" / "MPRAGE" / "T88_111" / \
                    f"{sid}_mpr_n4_anon_111_t88_{opts['volume']}.img"
                images.append(ctx.rel(vols.get(sid, default)))

        table = pd.DataFrame({"image": images, "label": cdr.to_numpy(), "patient_id": ids.str[:9].to_numpy(),
                              "session": ids.to_numpy()})
        if "sex" in wanted:
            table["sex"] = map_values(df["M/F"], {"m": 0, "f": 1}, dataset=self.title, path=meta_path,
                                      column="M/F").to_numpy()
        if {"age_binary", "age_5"} & set(wanted):
            add_age_columns(table, numeric_age(df["Age"], dataset=self.title, path=meta_path, column="Age"), wanted)
        if not opts["include_reliability"]:
            table = drops.drop(table, ~table["session"].str.endswith("_MR1"), "reliability_rescan")
        table = drops.drop(table, table["label"].isna(), "cdr_missing")
        table["label"] = table["label"].astype(int)
        reader = read_pil if mode == "gif" else functools.partial(read_analyze_slice, **slice_kw)
        return AdapterResult(
            table=table, attributes={a: self.attributes[a] for a in wanted}, label_names=self.label_names,
            reader=reader,
            extra={"metadata": str(meta_path), "label_rule": "CDR > 0", "cdr_missing": opts["cdr_missing"],
                   "image": {"source": mode, "volume": f"t88_{opts['volume']}",
                             **slice_kw},
                   "dropped": drops.records},
        )
