"""Which retrained models a search exports, where their folders go in the run folder, and their
MLflow pyfunc models on the parent run (docs/design.md#the-exported-model).

``search.export`` names them: the selected row (default), every row, or none; each is the retrain
with the first seed (``train.seed``). retrain_test writes the folders, publish logs them.
"""
from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

from mlflow.tracking import MlflowClient

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.export.folder import MODEL_JSON, write_model_folder
from fairtune_ray.data.fingerprint import dataset_fingerprint
from fairtune_ray.export.metadata import model_metadata
from fairtune_ray.export.mlflow_model import log_model
from fairtune_ray.search.results import ResultRow, Role
from fairtune_ray.search.run_folder import MODEL_DIR, OTHER_MODELS_DIR
from fairtune_ray.search.stages.types import Candidate, Prepared
from fairtune_ray.tracking.descriptions import MODEL_URI_TAG  # noqa: F401 - where the selected model is; publish sets it
from fairtune_ray.training.spec import TrialSpec



def exported_methods(cfg: ExperimentConfig, candidates: list[Candidate]) -> set[str]:
    """The candidates whose first-seed retrain is exported (``search.export``)."""
    if cfg.search.export == "none":
        return set()
    return {c.method for c in candidates if cfg.search.export == "all" or c.role is Role.SELECTED}


def _slug(method: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", method.lower()).strip("_") or "model"


def model_folder(run_dir: Path, method: str, role: Role) -> tuple[Path, str]:
    """(folder in the run folder, artifact path on the parent run) of one exported row."""
    if role is Role.SELECTED:
        return Path(run_dir) / MODEL_DIR, MODEL_DIR
    return Path(run_dir) / OTHER_MODELS_DIR / _slug(method), f"{OTHER_MODELS_DIR}/{_slug(method)}"


def write_exports(p: Prepared, candidates: list[Candidate], rows: list[ResultRow], trained: dict[str, dict]) -> list[Path]:
    """One model folder per exported candidate. ``trained``: method -> its first-seed retrain output
    (with ``export``, the captured weights)."""
    if not trained:
        return []
    cfg, run = p.cfg, {"run_name": p.name, "parent_run_id": p.parent_run_id}
    fingerprint, by_method, written = dataset_fingerprint(p.data), {r.method: r for r in rows}, []
    for c in candidates:
        out = trained.get(c.method)
        if out is None:
            continue
        row, weights = by_method[c.method], out["export"]
        spec = TrialSpec(**{**c.spec.to_dict(), "seed": cfg.train.seed})
        evidence = {"seed": spec.seed, "best_epoch": out["best_epoch"], "trainable_params": out["trainable"],
                    "total_params": weights.total_params, "val_objective": out["val_objective"],
                    "test_n": int(len(out["labels"])), "test_metrics": out["test_metrics"],
                    "row_test_metrics": {m: asdict(iv) for m, iv in row.test.items()}, "row_seeds": row.seeds}
        meta = model_metadata(cfg, spec, p.data, preprocess=weights.preprocess, fingerprint=fingerprint,
                              provenance={"method": c.method, "role": c.role.value, **run}, evidence=evidence)
        folder, _ = model_folder(p.run_dir, c.method, c.role)
        written.append(write_model_folder(folder, weights.weights, meta))
    return written


def log_exports(client: MlflowClient, parent_run_id: str, run_dir: Path, rows: list[ResultRow],
                log: Callable = print) -> Optional[str]:
    """Log every exported folder found in the run folder as a pyfunc model on the parent run; returns
    the selected model's models:/<model id> URI (None when it was not exported)."""
    selected_uri = None
    for row in rows:
        folder, artifact_path = model_folder(run_dir, row.method, row.role)
        if not (folder / MODEL_JSON).is_file():
            continue
        uri = log_model(client, parent_run_id, folder, artifact_path)
        if row.role is Role.SELECTED:
            selected_uri = uri
        log(f"model ({row.method}): {folder.resolve()}  [MLflow: {uri}]")
    return selected_uri
