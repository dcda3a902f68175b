"""HAM10000 dermoscopy (Tschandl et al. 2018): malignant (akiec, mel) vs the rest.

Obtained from the Harvard Dataverse, doi:10.7910/DVN/DBW86T (also mirrored on Kaggle as
"skin-cancer-mnist-ham10000"). Expected under ``--root``::

    HAM10000_metadata.csv        columns lesion_id, image_id, dx, dx_type, age, sex, localization
                                 (the Dataverse "HAM10000_metadata.tab" / extension-less file also works)
    HAM10000_images_part_1/ISIC_0024306.jpg ...
    HAM10000_images_part_2/ISIC_0029306.jpg ...

Images are found by ``image_id`` anywhere below the root, so the Kaggle layout (lower-case
folder names) works too. Label: ``dx`` in {akiec, mel} (docs/design.md#data-model). ``sex`` male/female
(unknown dropped for that attribute); ``age`` in years, empty when unknown. Splits are by
``lesion_id``: several images of one lesion never straddle splits.
"""
from __future__ import annotations

from fairtune_ray.data.adapters.base import Adapter, AdapterContext, AdapterResult, Option
from fairtune_ray.data.adapters.columns import AGE_5, AGE_BINARY, SEX, add_age_columns, map_values, numeric_age
from fairtune_ray.data.adapters.registry import register_adapter
from fairtune_ray.data.adapters.tables import find_file, index_files, read_table, require_columns
from fairtune_ray.data.manifest import DataError

DX = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


@register_adapter("ham10000", aliases=("ham",))
class HAM10000Adapter(Adapter):
    """HAM10000 dermoscopy: malignant (akiec, mel) vs benign; sex, age."""

    title = "HAM10000"
    source_url = "https://doi.org/10.7910/DVN/DBW86T"
    unit = "lesion"
    label_names = {0: "benign", 1: "malignant"}
    disease_label = 1  # malignant
    attributes = {"sex": SEX, "age_binary": AGE_BINARY, "age_5": AGE_5}
    default_attributes = ("sex", "age_binary", "age_5")
    options = {"malignant": Option("akiec,mel", "comma-separated dx codes counted as malignant",
                                   lambda s: ",".join(x.strip() for x in str(s).split(",") if x.strip()))}

    def load(self, ctx: AdapterContext) -> AdapterResult:
        opts = self.resolve_options(ctx.options)
        wanted = self.requested_attributes(ctx)
        meta_path = find_file(ctx.root, ["HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata"],
                              dataset=self.title, what="metadata file")
        df = read_table(meta_path, dataset=self.title, dtype={"lesion_id": str, "image_id": str})
        require_columns(df, ["lesion_id", "image_id", "dx", "age", "sex"], meta_path, dataset=self.title)
        malignant = [m.lower() for m in opts["malignant"].split(",")]
        unknown_mal = sorted(set(malignant) - set(DX))
        if unknown_mal:
            raise DataError(f"{self.title}: option 'malignant' names unknown dx codes {unknown_mal}; known: {list(DX)}")
        dx = map_values(df["dx"], {d: i for i, d in enumerate(DX)}, dataset=self.title, path=meta_path,
                        column="dx", missing_ok=False)
        label = dx.isin([DX.index(m) for m in malignant]).astype(int)

        meta_dir = meta_path.parent
        index = index_files(meta_dir, (".jpg", ".jpeg", ".png"))
        part1 = meta_dir / "HAM10000_images_part_1"
        images = [ctx.rel(index.get(str(i), part1 / f"{i}.jpg")) for i in df["image_id"].astype(str)]

        table = df[[]].copy()
        table["image"] = images
        table["label"] = label.to_numpy()
        table["patient_id"] = df["lesion_id"].astype(str).to_numpy()
        table["image_id"] = df["image_id"].astype(str).to_numpy()
        table["dx"] = df["dx"].astype(str).to_numpy()
        if "sex" in wanted:
            table["sex"] = map_values(df["sex"], {"male": 0, "female": 1, "unknown": None}, dataset=self.title,
                                      path=meta_path, column="sex").to_numpy()
        if {"age_binary", "age_5"} & set(wanted):
            add_age_columns(table, numeric_age(df["age"], dataset=self.title, path=meta_path, column="age"), wanted)
        return AdapterResult(
            table=table, attributes={a: self.attributes[a] for a in wanted}, label_names=self.label_names,
            extra={"metadata": str(meta_path), "label_rule": f"dx in {malignant}", "split_unit": "lesion_id"},
        )
