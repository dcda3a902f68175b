"""An exported model in MLflow: logged as a pyfunc model on the search's parent run, registered in
the Model Registry on request, and found again from a ``models:/NAME/VERSION`` reference.

Written with ``MlflowClient`` and a local save (no global active run), like the rest of the tracking.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

import mlflow.pyfunc
import numpy as np
import safetensors
import timm
import torch
from mlflow.artifacts import download_artifacts
from mlflow.entities import LoggedModel, LoggedModelOutput, Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Schema, TensorSpec

from fairtune_ray.export.folder import PYFUNC_ARTIFACT, find_model_folder, read_model_meta
from fairtune_ray.export.pyfunc import FairtuneModel

MODELS_SCHEME = "models:/"
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def signature_and_example(meta: dict) -> tuple[ModelSignature, np.ndarray]:
    """uint8 images (N, H, W, C) at the model's data size in, one float32 probability per image out."""
    size, channels = int(meta["data"]["image_size"]), int(meta["data"]["channels"])
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("uint8"), (-1, size, size, channels))]),
                               outputs=Schema([TensorSpec(np.dtype("float32"), (-1,))]))
    return signature, np.zeros((1, size, size, channels), dtype=np.uint8)


def save_pyfunc(folder: Union[str, Path], out: Union[str, Path]) -> Path:
    """The pyfunc model of a model folder, saved locally (MLmodel, signature, input example)."""
    meta = read_model_meta(folder)
    signature, example = signature_and_example(meta)
    # Explicit requirements: inferring them would load the model once more in a subprocess.
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"timm=={timm.__version__}",
                    f"safetensors=={safetensors.__version__}", f"mlflow=={mlflow.__version__}"]
    with _quiet_mlflow():
        mlflow.pyfunc.save_model(str(out), python_model=FairtuneModel(), artifacts={PYFUNC_ARTIFACT: str(folder)},
                                 signature=signature, input_example=example, pip_requirements=requirements,
                                 metadata={"fairtune_ray": {k: meta.get(k) for k in ("method", "role", "data_fingerprint")}})
    return Path(out)


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Without MLflow's cloudpickle notice (our class is pickled by reference) and its progress bar
    for copying the two files of the folder: the search's output stays the table and the paths."""
    logger = logging.getLogger("mlflow.pyfunc")
    level, bar = logger.level, os.environ.get(_PROGRESS_BAR)
    logger.setLevel(logging.ERROR)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = bar


def log_model(client: MlflowClient, run_id: str, folder: Union[str, Path], artifact_path: str = "model") -> str:
    """Log the model folder as an MLflow 3 logged model (pyfunc) named ``artifact_path``, linked to the
    run: the run page's "Logged models" and the experiment's Models tab list it, with its test metrics.
    Returns its ``models:/<model_id>`` URI."""
    run = client.get_run(run_id)
    meta = read_model_meta(folder)
    adapters = meta.get("adapters") or {}
    # a logged model's name may not hold '/': models/lora (search.export: all) is logged as models-lora
    logged = client.create_logged_model(run.info.experiment_id, name=artifact_path.replace("/", "-"), source_run_id=run_id,
                                        model_type="fairtune-ray pyfunc",
                                        tags={"fairtune.role": str(meta.get("role", "")),
                                              "fairtune.method": str(meta.get("method", ""))},
                                        params={"mask": str(meta["spec"]["mask"]), "lr": str(meta["spec"]["lr"]),
                                                "peft": str(adapters.get("method", "mask"))})
    with tempfile.TemporaryDirectory(prefix="fairtune-pyfunc-") as tmp:
        local = save_pyfunc(folder, Path(tmp) / "model")
        client.log_model_artifacts(logged.model_id, str(local))
    _link_metrics(client, run_id, logged.model_id, meta)
    client.finalize_logged_model(logged.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, 0)])  # the run's "Logged models" section
    return f"{MODELS_SCHEME}{logged.model_id}"


def _link_metrics(client: MlflowClient, run_id: str, model_id: str, meta: dict) -> None:
    """The exported seed's test metrics, attached to the logged model (its page shows them)."""
    values = {f"test/{k}": float(v) for k, v in (meta.get("test_metrics") or {}).items()
              if isinstance(v, (int, float)) and np.isfinite(v)}
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0, model_id=model_id) for key, value in sorted(values.items())]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])


def logged_model(client: MlflowClient, run_id: str, artifact_path: str = "model") -> LoggedModel:
    """The model ``log_model`` linked to the run under ``artifact_path``."""
    run = client.get_run(run_id)
    found = client.search_logged_models([run.info.experiment_id],
                                        filter_string=f"source_run_id = '{run_id}' AND name = '{artifact_path}'")
    if not found:
        raise FileNotFoundError(f"run {run_id} has no logged model named '{artifact_path}'")
    return found[0]


def register_model(tracking_uri: str, run_id: str, name: str, artifact_path: str = "model") -> ModelVersion:
    """A new version of registered model ``name`` (created if needed) from the run's logged model."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="fairtune-ray exported model (model.json + safetensors)")
    model = logged_model(client, run_id, artifact_path)
    # the artifact location, not models:/<id>: the registry would resolve that against the global tracking URI
    return client.create_model_version(name, model.artifact_location, run_id=run_id, model_id=model.model_id)


def _model_version(client: MlflowClient, ref: str, tracking_uri: str) -> ModelVersion:
    """The version ``models:/NAME/VERSION`` names (VERSION a number or ``latest``), or a clear error."""
    name, _, version = ref[len(MODELS_SCHEME):].strip("/").rpartition("/")
    if not name or not version:
        raise FileNotFoundError(f"'{ref}': expected models:/NAME/VERSION (e.g. models:/derm-fair/1)")
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise FileNotFoundError(f"'{ref}': no registered model named '{name}' in {tracking_uri} "
                                "(register one with fairtune-ray search --register-model NAME)")
    if version == "latest":
        return max(versions, key=lambda v: int(v.version))
    found = [v for v in versions if str(v.version) == version]
    if not found:
        known = ", ".join(str(v) for v in sorted(int(v.version) for v in versions))
        raise FileNotFoundError(f"'{ref}': registered model '{name}' has no version {version} (versions: {known})")
    return found[0]


def resolve_model(ref: str, tracking_uri: str, workdir: Union[str, Path]) -> Path:
    """The local model folder behind a run folder, a model folder or ``models:/NAME/VERSION``
    (downloaded into ``workdir``)."""
    if not ref.startswith(MODELS_SCHEME):
        return find_model_folder(ref)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    mv = _model_version(client, ref, tracking_uri)
    uri = client.get_model_version_download_uri(mv.name, mv.version)
    local = download_artifacts(artifact_uri=uri, dst_path=str(workdir), tracking_uri=tracking_uri)
    return find_model_folder(local)
