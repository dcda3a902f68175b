"""The ``data`` section: which dataset, which attribute defines the groups, how batches are drawn."""
from __future__ import annotations

from pydantic import Field

from fairtune_ray.config.base import StrictSection


class SyntheticConfig(StrictSection):
    """The embedded dermatology-like dataset (docs/design.md#the-embedded-synthetic-dataset): lesions on
    several skin tones, the darkest a low-contrast minority, and a marker artefact that tracks the label
    in the majority tones only. Generated once and cached under ``data.cache_dir``."""

    n_samples: int = Field(2000, ge=60, description=(
        "Images in the target (fine-tuning) task, all splits together; split 60/20/20 train/val/test by "
        "patient. The minority gets about `minority_fraction` of them, so small values leave it few test images."))
    image_size: int = Field(32, ge=16, le=512, description=(
        "Side of the generated square images, in pixels. Batches are resized to the backbone's input size, "
        "so this need not match it."))
    minority_fraction: float = Field(0.15, gt=0.0, lt=0.5, description=(
        "Share of the images in the darkest skin tone, the minority group."))
    n_skin_tones: int = Field(3, ge=2, le=6, description=(
        "Skin tones, i.e. the groups of the attribute `skin_tone`; the darkest is the minority. Three are "
        "named light, medium and dark, other counts tone1..toneN."))
    minority_contrast: float = Field(0.7, gt=0.0, le=1.0, description=(
        "Lesion contrast of the minority tone relative to the others (1 = the same); lower makes its "
        "lesions harder to see."))
    artefact_strength: float = Field(0.85, ge=0.5, le=1.0, description=(
        "P(artefact | malignant) in the majority tones: how strongly the spurious marker artefact "
        "tracks the label there (it carries no label information in the minority)."))
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
    sensitive_attribute: str = Field("skin_tone", description=(
        "Manifest column whose codes define the demographic groups every metric is computed over (e.g. "
        "sex, age, skin_type); it must be one of the attributes the prepared dataset records."))
    cache_dir: str = Field(".fairtune_cache", description=(
        "Folder for generated data, the pre-trained `micro` backbone and the Fisher cache. With the Fisher "
        "method on a multi-node cluster it must be storage every node sees."))
    batch_size: int = Field(128, ge=1, description=(
        "Training batch size, in images per step of each process (each worker of a multi-worker trial "
        "draws batches of this size)."))
    eval_batch_size: int = Field(512, ge=1, description=(
        "Batch size for scoring the validation and test splits; no gradients are kept, so it can be larger."))
    group_balanced: bool = Field(False, description=(
        "Draw training batches so that every (group, label) cell is equally likely (a weighted sampler) "
        "instead of shuffling; helps a small group be seen during training."))
    class_weights: bool = Field(False, description=(
        "Weight the positive class by negatives/positives in the training loss; for a rare positive label."))
    augment: bool = Field(True, description=(
        "Random horizontal and vertical flips of training images (lesion and fundus images have no canonical "
        "orientation); turn off where orientation carries meaning, e.g. chest X-rays."))
