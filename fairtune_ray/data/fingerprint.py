"""A prepared dataset's identity: which images, labels, groups and splits a result was computed on.

Recorded with every study (environment.json) and every exported model (model.json), so a result can
be matched to its data and ``evaluate`` can tell the model's own data from another dataset.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from fairtune_ray.data.packed import PackedDataset

_PIXEL_SAMPLE = 256  # images whose pixels enter the fingerprint (all of them would cost minutes on CheXpert)


def dataset_fingerprint(data: PackedDataset) -> str:
    """The prepared dataset's identity: its dataset.json, its manifest (ids, splits, labels, patients,
    attributes) and the pixels of up to 256 evenly spaced images. Equal fingerprints mean "the data
    the model was trained and tested on", so ``evaluate`` can say whether it audits held-out data."""
    info = data.info
    h = hashlib.sha256()
    header = {"name": info.name, "attributes": {a: {str(k): v for k, v in m.items()} for a, m in info.attributes.items()},
              "labels": {str(k): v for k, v in info.label_names.items()}, "image_size": info.image_size,
              "channels": info.channels}
    h.update(json.dumps(header, sort_keys=True).encode())
    cols = [c for c in ("sample_id", "split", "label", "patient_id", *sorted(info.attributes))
            if c in data.manifest.columns]
    h.update(data.manifest[cols].to_csv(index=False).encode())
    n = len(data.images)
    if n:
        idx = np.unique(np.linspace(0, n - 1, min(n, _PIXEL_SAMPLE)).astype(np.int64))
        h.update(np.ascontiguousarray(data.images[idx]).tobytes())
    return h.hexdigest()[:16]
