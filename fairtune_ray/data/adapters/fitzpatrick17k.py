"""Fitzpatrick17k clinical skin images (Groh et al. 2021): malignant vs the rest, by skin type.

Obtained from https://github.com/mattgroh/fitzpatrick17k: the repository ships
``fitzpatrick17k.csv``; the images are fetched by the user from its ``url`` column and saved
as ``<md5hash>.jpg`` (the layout MEDFAIR and FairTune use)::

    fitzpatrick17k.csv    columns md5hash, fitzpatrick_scale, fitzpatrick_centaur, label,
                          nine_partition_label, three_partition_label, qc, url, url_alphanum
    images/<md5hash>.jpg  (any folder below the root; .jpg/.jpeg/.png)

Label: ``three_partition_label == "malignant"`` (others: benign, non-neoplastic). Skin type
from ``fitzpatrick_scale`` 1-6 (-1 = not rated, dropped): ``skin_type`` (6 types) and
``skin_type_binary`` (I-III vs IV-VI). The dataset has no patient ids; each image (md5hash) is
its own split unit.
"""
from __future__ import annotations

from fairtune_ray.data.adapters.base import Adapter, AdapterContext, AdapterResult, Option
from fairtune_ray.data.adapters.columns import map_values
from fairtune_ray.data.adapters.registry import register_adapter
from fairtune_ray.data.adapters.tables import find_file, index_files, read_table, require_columns

SKIN_TYPE = {0: "I", 1: "II", 2: "III", 3: "IV", 4: "V", 5: "VI"}
SKIN_TYPE_BINARY = {0: "I-III", 1: "IV-VI"}


@register_adapter("fitzpatrick17k", aliases=("fitzpatrick", "fitz17k"))
class Fitzpatrick17kAdapter(Adapter):
    """Fitzpatrick17k clinical images: malignant vs not; skin type (I-III vs IV-VI, and 6 types)."""

    title = "Fitzpatrick17k"
    source_url = "https://github.com/mattgroh/fitzpatrick17k"
    unit = "image"
    label_names = {0: "non-malignant", 1: "malignant"}
    disease_label = 1  # malignant
    attributes = {"skin_type_binary": SKIN_TYPE_BINARY, "skin_type": SKIN_TYPE}
    default_attributes = ("skin_type_binary", "skin_type")
    options = {"skin_column": Option("fitzpatrick_scale",
                                     "column with the Fitzpatrick type: fitzpatrick_scale or fitzpatrick_centaur")}

    def load(self, ctx: AdapterContext) -> AdapterResult:
        opts = self.resolve_options(ctx.options)
        wanted = self.requested_attributes(ctx)
        meta_path = find_file(ctx.root, ["fitzpatrick17k.csv"], dataset=self.title, what="metadata file")
        df = read_table(meta_path, dataset=self.title, dtype={"md5hash": str})
        skin_col = opts["skin_column"]
        require_columns(df, ["md5hash", skin_col, "three_partition_label"], meta_path, dataset=self.title)
        part = map_values(df["three_partition_label"], {"benign": 0, "malignant": 1, "non-neoplastic": 0},
                          dataset=self.title, path=meta_path, column="three_partition_label", missing_ok=False)
        skin = map_values(df[skin_col], {**{t: t - 1 for t in range(1, 7)}, -1: None},
                          dataset=self.title, path=meta_path, column=skin_col)

        index = index_files(meta_path.parent, (".jpg", ".jpeg", ".png"))
        default_dir = meta_path.parent / "images"
        md5 = df["md5hash"].astype(str)
        table = df[[]].copy()
        table["image"] = [ctx.rel(index.get(h, default_dir / f"{h}.jpg")) for h in md5]
        table["label"] = part.astype(int).to_numpy()
        table["patient_id"] = md5.to_numpy()
        if "skin_type" in wanted:
            table["skin_type"] = skin.to_numpy()
        if "skin_type_binary" in wanted:
            table["skin_type_binary"] = (skin >= 3).astype(float).where(skin.notna()).to_numpy()
        return AdapterResult(
            table=table, attributes={a: self.attributes[a] for a in wanted}, label_names=self.label_names,
            extra={"metadata": str(meta_path), "label_rule": "three_partition_label == 'malignant'",
                   "skin_column": skin_col, "split_unit": "md5hash (image)"},
        )
