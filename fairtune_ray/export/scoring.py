"""Score a prepared dataset with an exported model: resolve the model, check the dataset fits it
(on metadata alone, before any image is read), then load the split's images and score them."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from fairtune_ray.config import DataConfig
from fairtune_ray.data.fingerprint import dataset_fingerprint
from fairtune_ray.data.groups import attribute_label, attribute_list, group_coding, like_model
from fairtune_ray.data.loading import storage_for
from fairtune_ray.data.manifest import load_manifest, pixel_bytes
from fairtune_ray.data.packed import PackedDataset, load_packed_dataset
from fairtune_ray.export.checks import ALL_SPLITS, check_dataset
from fairtune_ray.export.folder import read_model_meta
from fairtune_ray.export.mlflow_model import resolve_model
from fairtune_ray.export.rebuild import ExportedModel


@dataclass
class ScoringJob:
    """A model folder and the rows of a dataset it will score, checked to fit each other."""

    folder: Path
    meta: dict
    data: PackedDataset  # the chosen split's rows only
    split: str
    attribute: Optional[str]  # the display label of the attribute(s) the groups come from (data.groups)
    same_data: bool  # the dataset's fingerprint is the one the model was trained and tested on

    @property
    def model_attribute(self) -> str:
        return attribute_label(model_attributes(self.meta))


def model_attributes(meta: dict) -> list[str]:
    """The attribute(s) an exported model's groups come from (model.json ``data.sensitive_attribute``)."""
    return attribute_list(meta["data"]["sensitive_attribute"])


def prepare_scoring(model_ref: str, data_uri: str, split: str, tracking_uri: str, workdir: Union[str, Path],
                    attribute: Union[str, Sequence[str], None] = None, need_attribute: bool = True) -> ScoringJob:
    """Resolve and check everything. With ``need_attribute`` the groups (``job.data.groups``) come from
    ``attribute`` (one or a list; default: the model's own, grouped as the model's groups were), which the
    dataset must record."""
    folder = resolve_model(model_ref, tracking_uri, workdir)
    meta = read_model_meta(folder)
    attrs = (attribute_list(attribute) if attribute else model_attributes(meta)) if need_attribute else None
    manifest, info = load_manifest(data_uri)
    check_dataset(meta, info, manifest, where=data_uri, split=split, attribute=attrs)
    # in memory up to data.memory_limit_mb's default, else memory-mapped (scored batch by batch)
    data = load_packed_dataset(data_uri, storage=storage_for(DataConfig(), pixel_bytes(manifest, info)))
    same = dataset_fingerprint(data) == meta.get("data_fingerprint")
    if attrs is not None:
        groups = group_coding(data.manifest, info, attrs)
        if attrs == model_attributes(meta):
            groups = like_model(data.manifest, groups, meta["data"].get("group_names", {}))
        data = replace(data, groups=groups)
    part = data if split == ALL_SPLITS else data.split(split)
    return ScoringJob(folder, meta, part, split, attribute_label(attrs) if attrs else None, same)


def score_job(job: ScoringJob, device: Optional[str] = None) -> np.ndarray:
    """P(label 1) for every row of the job's split, in manifest order."""
    return ExportedModel(job.folder, device=device).score(job.data.images)
