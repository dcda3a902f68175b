"""A model folder on disk: ``model.safetensors`` (the full state dict) and ``model.json`` (how to
rebuild and use it). One place for the file names, and for finding the folder a user points at."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Union

from fairtune_ray.common.files import atomic_path

MODEL_JSON = "model.json"
WEIGHTS_FILE = "model.safetensors"
RUN_MODEL_DIR = "model"  # inside a run folder runs/<name>/ (search.run_folder.MODEL_DIR names the same)
PYFUNC_ARTIFACT = "model_dir"  # the pyfunc artifact key; its folder holds model.json
FORMAT = "fairtune-ray-model"
FORMAT_VERSION = 1


def write_model_folder(folder: Union[str, Path], weights: bytes, meta: dict) -> Path:
    """Write weights and metadata atomically: a reader never sees a folder without both."""
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / WEIGHTS_FILE).write_bytes(weights)
        (tmp / MODEL_JSON).write_text(json.dumps(json_safe(meta), indent=2))
    return folder


def read_model_meta(folder: Union[str, Path]) -> dict:
    """model.json of a model folder (FileNotFoundError naming the folder when it has none)."""
    folder = Path(folder)
    path = folder / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(f"'{folder}' holds no exported model ({MODEL_JSON} missing)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise FileNotFoundError(f"'{path}' is not a fairtune-ray model description (format {meta.get('format')!r})")
    if not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"'{folder}' has {MODEL_JSON} but no {WEIGHTS_FILE}")
    return meta


def find_model_folder(path: Union[str, Path]) -> Path:
    """The model folder behind what a user passed: a model folder, a run folder ``runs/<name>``
    (its ``model/``), or a downloaded MLflow pyfunc model (the folder under its ``artifacts/``)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model '{path}' does not exist (expected a run folder runs/<name>, "
                                f"a model folder with {MODEL_JSON}, or models:/NAME/VERSION)")
    # an MLflow pyfunc model keeps the folder under artifacts/<the logged folder's name>/
    for candidate in (path, path / RUN_MODEL_DIR, *sorted((path / "artifacts").glob(f"*/{MODEL_JSON}"))):
        candidate = candidate.parent if candidate.name == MODEL_JSON else candidate
        if (candidate / MODEL_JSON).is_file():
            return candidate
    raise FileNotFoundError(f"'{path}' holds no exported model: no {MODEL_JSON} in it, in {RUN_MODEL_DIR}/ "
                            "(a run folder) or under artifacts/ (an MLflow model); a search run with "
                            "search.export: none exports nothing")


def json_safe(value):
    """NaN and infinities as null: model.json stays strict JSON for any reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
