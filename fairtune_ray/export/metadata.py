"""What ``model.json`` records: enough to rebuild the network and its preprocessing, to check that a
dataset fits it, and to say what it was measured at (docs/design.md#the-exported-model)."""
from __future__ import annotations

import platform
import time
from typing import Optional


from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.fingerprint import dataset_fingerprint
from fairtune_ray.data.groups import GroupCoding, coding_for
from fairtune_ray.data.manifest import DatasetInfo
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.export.folder import FORMAT, FORMAT_VERSION
from fairtune_ray.tracking.environment import package_versions
from fairtune_ray.training.spec import TrialSpec

THRESHOLD = 0.5  # the decision threshold every metric of the pipeline uses (docs/design.md#objectives-and-metrics)


def data_section(cfg: ExperimentConfig, info: DatasetInfo, groups: Optional[GroupCoding] = None) -> dict:
    """The input the model takes, the attribute(s) its groups come from and what its labels mean.
    ``sensitive_attribute`` is the attribute's name, or the list of them for intersectional groups;
    ``group_names`` the groups the model was selected and tested on (``groups``; without it, the one
    attribute's codes), so that ``evaluate`` scores the same groups."""
    attribute = cfg.data.sensitive_attribute
    if groups is not None:
        names = groups.names
    else:
        names = info.attributes.get(attribute, {}) if isinstance(attribute, str) else {}
    return {"source": cfg.data.source, "dataset": info.name, "sensitive_attribute": attribute if isinstance(attribute, str) else list(attribute),
            "image_size": int(info.image_size), "channels": int(info.channels),
            "eval_batch_size": cfg.data.eval_batch_size,
            "group_names": {str(k): v for k, v in names.items()},
            "label_names": {str(k): v for k, v in info.label_names.items()},
            # which label is the disease (dataset.json): 0 where label 1 is "no finding" (CheXpert, MIMIC-CXR)
            "disease_label": int(info.disease_label)}


def model_metadata(cfg: ExperimentConfig, spec: TrialSpec, data: PackedDataset, *, preprocess: dict,
                   provenance: dict, evidence: dict, fingerprint: Optional[str] = None) -> dict:
    """model.json. ``provenance``: method, role, run name, parent run id; ``evidence``: the exported
    seed's test metrics, the row's metrics with intervals, best epoch, parameter counts."""
    backbone = cfg.backbone.model_dump()
    pretrained_from = backbone.pop("checkpoint", None)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **provenance,
        # the structure only: rebuilding never loads hub weights or the pre-training checkpoint
        "backbone": {**backbone, "pretrained": False, "checkpoint": None},
        "pretrained_from": pretrained_from if pretrained_from else ("timm hub" if cfg.backbone.pretrained else None),
        "spec": spec.to_dict(),
        # the spec's PEFT method (if any) was merged into the base weights at export (export/capture.py)
        "adapters": {"method": spec.peft_method, "merged": True} if spec.peft_method else None,
        "objective": cfg.train.objective,
        "data": data_section(cfg, data.info, coding_for(cfg.data.sensitive_attribute, data)),
        "preprocess": preprocess,
        "positive_label": 1,
        "threshold": THRESHOLD,
        "data_fingerprint": fingerprint or dataset_fingerprint(data),
        **evidence,
        "versions": {**package_versions(), "python": platform.python_version()},
    }
