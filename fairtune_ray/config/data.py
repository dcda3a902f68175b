"""The ``data`` section: which dataset, which attribute defines the groups, how batches are drawn."""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from fairtune_ray.config.base import StrictSection


class SyntheticConfig(StrictSection):
    """The embedded dermatology-like dataset (docs/design.md#the-embedded-synthetic-dataset): lesions on
    several skin tones, the darkest a low-contrast minority, and a marker artefact that tracks the label
    in the majority tones only. Generated once and cached under ``data.cache_dir``.

    The defaults put it in FairTune's regime: a small training set (about 300 images, 50 of the minority)
    that full fine-tuning fits in every group, and validation and test splits enlarged with extra,
    minority-enriched images, so that the minority's test metrics are measured to about ±0.05
    (benchmarks/fairness_regime.py)."""

    n_samples: int = Field(500, ge=60, description=(
        "Images of the base set (one to three per patient, `minority_fraction` of them in the minority), "
        "split 60/20/20 train/val/test by patient. The training split comes from it alone; "
        "`val_samples` and `test_samples` add images to the other two splits."))
    val_samples: int = Field(400, ge=0, description=(
        "Further images added to the validation split only (one per new patient), with "
        "`eval_minority_fraction` of them in the minority: more minority images for the validation "
        "objective. They are scored after every epoch, so they cost evaluation time, not training time."))
    test_samples: int = Field(2000, ge=0, description=(
        "Further images added to the test split only (one per new patient), with `eval_minority_fraction` "
        "of them in the minority, so that the minority's test metrics have narrow intervals. They are "
        "scored once per retrain and cost no training time."))
    eval_minority_fraction: Optional[float] = Field(0.34, gt=0.0, lt=1.0, description=(
        "Share of the minority tone among the `val_samples` and `test_samples` images; null = "
        "`minority_fraction`. Group metrics do not depend on it; overall metrics (e.g. the overall AUC) "
        "are computed on the resulting mix of tones."))
    image_size: int = Field(32, ge=16, le=512, description=(
        "Side of the generated square images, in pixels. Batches are resized to the backbone's input size, "
        "so this need not match it."))
    minority_fraction: float = Field(0.15, gt=0.0, lt=0.5, description=(
        "Share of the images in the darkest skin tone, the minority group."))
    n_skin_tones: int = Field(3, ge=2, le=6, description=(
        "Skin tones, i.e. the groups of the attribute `skin_tone`; the darkest is the minority. Three are "
        "named light, medium and dark, other counts tone1..toneN."))
    minority_contrast: float = Field(0.9, gt=0.0, le=1.0, description=(
        "Lesion contrast of the minority tone relative to the others (1 = the same); lower makes its "
        "lesions harder to see."))
    artefact_strength: float = Field(0.85, ge=0.5, le=1.0, description=(
        "P(artefact | malignant) in the majority tones: how strongly the spurious marker artefact "
        "tracks the label there (it carries no label information in the minority)."))
    class_separation: float = Field(2.0, gt=0.0, le=3.0, description=(
        "How far apart the classes' border irregularity and colour variegation lie: the gap between the "
        "class means, in multiples of generator version 2's (1 = that gap). Higher makes the lesions "
        "themselves more telling in every tone, so the model can fit them rather than only the artefact."))
    label_noise: float = Field(0.0, ge=0.0, lt=0.5, description=(
        "Fraction of target-task labels flipped at random; 0 keeps the labels clean."))
    source_samples: int = Field(4000, ge=100, description=(
        "Images in the synthetic source task (4 classes, no artefact) that pre-trains the `micro` backbone."))
    seed: int = Field(0, description="Seed of the generator: the same settings give the same images and splits.")


class DataConfig(StrictSection):
    """Which dataset a study uses, which attribute defines its demographic groups, and how
    training batches are drawn."""

    source: str = Field("synthetic", description=(
        "'synthetic' for the embedded dataset, or the folder (a local path or an s3:// URI) of a dataset "
        "prepared with `fairtune-ray data prepare`."))
    synthetic: SyntheticConfig = Field(SyntheticConfig(), description=(
        "The embedded dataset's settings; used only when `data.source` is 'synthetic'."))
    sensitive_attribute: Union[str, list[str]] = Field("skin_tone", description=(
        "Manifest column whose codes define the demographic groups every metric is computed over (e.g. "
        "sex, age, skin_type); it must be one of the attributes the prepared dataset records. A list, "
        "e.g. [sex, age_binary], makes intersectional groups: the product of the attributes' codes, named "
        "like 'F × >=60' (value names joined by ' × ', in the order of the list)."))
    min_group_size: int = Field(5, ge=0, description=(
        "Fewest rows a group may have in each split (train, val, test) before `small_groups` applies; 0 "
        "turns the rule off. Counted on the whole dataset before the search starts, and listed there with "
        "each group's rows per split. The default keeps every group of the embedded synthetic data "
        "(its smallest, the dark tone, has 51 training images in the demo and 8 test images in the "
        "tests' 300-image version); intersectional groups are often smaller."))
    small_groups: Literal["merge", "reject"] = Field("merge", description=(
        "What happens to a group under `min_group_size` in a split: 'merge' pools such groups into one "
        "group named 'other' (coded last) and prints a warning; 'reject' stops with an error that lists "
        "them, before any Ray process starts."))
    cache_dir: str = Field(".fairtune_cache", description=(
        "Folder for generated data, the pre-trained `micro` backbone and the Fisher cache. With the Fisher "
        "method on a multi-node cluster it must be storage every node sees."))
    batch_size: int = Field(16, ge=1, description=(
        "Training batch size, in images per step of each process (each worker of a multi-worker trial "
        "draws batches of this size). The default suits the embedded demo's 300 training images (enough "
        "optimiser steps to fit them in a few epochs); the shipped experiments set 64."))
    storage: Literal["auto", "memory", "mapped"] = Field("auto", description=(
        "Where trials read the images from. 'memory': the driver reads every shard into one array, put once "
        "in the Ray object store, which the trials of a node share (fastest; for data that fit). 'mapped': "
        "each node streams the packed shards (local or s3://) once into an uncompressed file under "
        "`local_dir` and every process of the node memory-maps it; the driver reads no pixel and memory stays "
        "bounded for datasets larger than a node's memory (CheXpert, MIMIC-CXR). 'auto': 'memory' up to "
        "`memory_limit_mb` of pixels, 'mapped' above."))
    memory_limit_mb: int = Field(2048, ge=0, description=(
        "With `storage: auto`, the largest dataset (uncompressed pixels, from dataset.json and the manifest) "
        "held in memory."))
    local_dir: Optional[str] = Field(None, description=(
        "Node-local folder for the uncompressed copies that `storage: mapped` maps (needs the dataset's "
        "uncompressed size free on every node); null = the system temp folder."))
    eval_batch_size: int = Field(512, ge=1, description=(
        "Batch size for scoring the validation and test splits; no gradients are kept, so it can be larger."))
    group_balanced: Optional[bool] = Field(None, description=(
        "Draw training batches so that every (group, label) cell is equally likely (a weighted sampler) "
        "instead of shuffling; helps a small group be seen during training. null = on for the embedded "
        "synthetic data (so that its small minority is fitted on train), off for a prepared dataset; the "
        "saved config shows the value used."))
    class_weights: bool = Field(False, description=(
        "Weight the positive class by negatives/positives in the training loss; for a rare positive label."))
    augment: Optional[bool] = Field(None, description=(
        "Random horizontal and vertical flips of training images (lesion and fundus images have no canonical "
        "orientation); turn off where orientation carries meaning, e.g. chest X-rays. null = on for a "
        "prepared dataset, off for the embedded synthetic data (its demo fits the training set within a few "
        "epochs, which flips prevent); the saved config shows the value used."))

    @field_validator("sensitive_attribute")
    @classmethod
    def _attributes_listed_once(cls, value):
        """A list names one or more attributes, each once; a one-item list is that attribute."""
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("must name an attribute")
            return value
        if not value or any(not str(v).strip() for v in value):
            raise ValueError("must name one or more attributes")
        twice = sorted({v for v in value if value.count(v) > 1})
        if twice:
            raise ValueError(f"names {twice} more than once")
        return value[0] if len(value) == 1 else list(value)

    @model_validator(mode="after")
    def _resolve_source_defaults(self):
        """``null`` sampling and augmentation settings take the value for the data source."""
        synthetic = self.source == "synthetic"
        if self.group_balanced is None:
            self.group_balanced = synthetic
        if self.augment is None:
            self.augment = not synthetic
        return self
