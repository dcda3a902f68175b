"""The run folder ``runs/<name>/``: what a search leaves behind, and the one place its file names live.

The search writes it, the report and ``--resume`` read it. Each pipeline stage records its output
under ``stages/<stage>.json`` so a resumed run starts after the last recorded stage.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fairtune_ray.common.files import atomic_path, atomic_write_text
from fairtune_ray.export.folder import RUN_MODEL_DIR
from fairtune_ray.search.results import ResultRow

RUN_INFO = "fairtune_run.json"
CONFIG_FILE = "config.yaml"
TRIALS_FILE = "trials.json"
SCORES_FILE = "test_scores.npz"
STAGES_DIR = "stages"
MODEL_DIR = RUN_MODEL_DIR  # the selected model (model.safetensors + model.json); `evaluate runs/<name>` finds it
OTHER_MODELS_DIR = "models"  # with search.export: all, one folder per other row
ENVIRONMENT_FILE = "environment.json"  # versions, threads, hardware, weights and data digests


def read_json(path: Path, default=None):
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else default


def write_json(path: Path, value) -> Path:
    return atomic_write_text(path, json.dumps(value, indent=2, default=str))


def read_run_info(run_dir: Path) -> dict:
    return read_json(Path(run_dir) / RUN_INFO, {})


def update_run_info(run_dir: Path, **fields) -> dict:
    """Merge ``fields`` into fairtune_run.json (name, parent run id, tracking URI, storage, ...)."""
    info = {**read_run_info(run_dir), **fields}
    write_json(Path(run_dir) / RUN_INFO, info)
    return info


def save_test_scores(rows: Sequence[ResultRow], path: Path, group_names: Optional[dict] = None) -> Path:
    """Each row's test labels, groups and per-seed scores, one npz array set per method."""
    arrays: dict[str, np.ndarray] = {}
    methods = []
    for row in rows:
        if row.scores is None:
            continue
        i = len(methods)
        methods.append(row.method)
        arrays[f"m{i}_labels"] = np.asarray(row.scores.labels)
        arrays[f"m{i}_groups"] = np.asarray(row.scores.groups)
        arrays[f"m{i}_scores"] = np.atleast_2d(np.asarray([np.asarray(s, dtype=np.float32) for s in row.scores.scores]))
    names = group_names or {}
    arrays["methods"] = np.array(methods, dtype=str)
    arrays["group_codes"] = np.array(sorted(names), dtype=np.int64)
    arrays["group_names"] = np.array([str(names[c]) for c in sorted(names)], dtype=str)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return Path(path)


def load_test_scores(path: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[int, str]]:
    """({method: {labels, groups, scores [seeds, n]}}, {group code: name})."""
    with np.load(path, allow_pickle=False) as z:
        methods = [str(m) for m in z["methods"]]
        out = {m: {"labels": z[f"m{i}_labels"], "groups": z[f"m{i}_groups"], "scores": np.atleast_2d(z[f"m{i}_scores"])}
               for i, m in enumerate(methods)}
        names = {int(c): str(n) for c, n in zip(z["group_codes"], z["group_names"])}
    return out, names
