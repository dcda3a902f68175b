"""What else decides a study's numbers besides its config: library versions, threads, hardware,
the pre-trained weights and the data. Written to the run folder and the MLflow parent run so that a
result can be reproduced, or a difference between two runs explained."""
from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

from fairtune_ray.config import ExperimentConfig

#: libraries whose version can change a result
PACKAGES = ("fairtune-ray", "torch", "torchvision", "timm", "accelerate", "ray", "hyperopt", "numpy",
            "scikit-learn", "mlflow", "pyarrow")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def describe_environment(cfg: ExperimentConfig, trial_threads: int, checkpoint_sha256: str, data_fingerprint: str) -> dict:
    """The record: versions, threads per trial process, CPU count, GPU, weights digest, data fingerprint."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "trial_threads": trial_threads, "max_concurrent": cfg.search.max_concurrent,
            "gpu": gpu, "cuda": torch.version.cuda or "none", "checkpoint_sha256": checkpoint_sha256,
            "data_fingerprint": data_fingerprint, "versions": package_versions()}


def environment_tags(env: dict) -> dict[str, str]:
    """The record as flat MLflow tags (``fairtune.env.*``), searchable in the runs table."""
    flat = {k: v for k, v in env.items() if k != "versions"}
    flat.update({f"version.{k}": v for k, v in env["versions"].items()})
    return {f"fairtune.env.{k}": str(v) for k, v in flat.items()}
