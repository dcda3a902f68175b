"""A prepared dataset's identity: which images, labels, groups and splits a result was computed on.

Recorded with every study and every exported model, so a result can be matched to its data and an
evaluation on "the same" data can be checked to really be the same.
"""
from __future__ import annotations

import hashlib

import numpy as np

from fairtune_ray.data.manifest import PackedDataset

#: above this many image bytes only every k-th image enters the digest (the manifest always does)
FULL_HASH_BYTES = 1 << 30


def dataset_fingerprint(data: PackedDataset) -> str:
    """blake2b (16 bytes, hex) of the manifest's identity columns, the image array's shape and the
    image bytes (a strided sample of the images for datasets above ``FULL_HASH_BYTES``)."""
    h = hashlib.blake2b(digest_size=16)
    cols = [c for c in ("sample_id", "patient_id", "split", "label", *data.info.attributes) if c in data.manifest]
    h.update(data.manifest[cols].to_csv(index=False).encode())
    h.update(str(tuple(data.images.shape)).encode())
    step = max(1, int(np.ceil(data.images.nbytes / FULL_HASH_BYTES)))
    for image in data.images[::step]:
        h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()
