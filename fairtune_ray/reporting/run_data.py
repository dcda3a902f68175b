"""Everything the report shows, gathered from a run folder and, when reachable, its MLflow parent run.

The run folder (``runs/<name>/``) holds results.json, trials.json, test_scores.npz, config.yaml and
fairtune_run.json. MLflow adds what the folder lacks: the trials' per-epoch histories (child runs),
Fisher statistics logged to the parent run, and the config when only the run id is known.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import yaml

from fairtune_ray.config import config_from_dict
from fairtune_ray.metrics import parse_objective
from fairtune_ray.models import get_space
from fairtune_ray.reporting.mlflow_access import SELECTED_TRIAL_PARAM, ParentRun, open_parent_run
from fairtune_ray.reporting.trials import (
    baseline_trial_ids, best_trials, mask_bit_keys, matching_trial, tune_histories,
)
from fairtune_ray.search.preflight import structure_model
from fairtune_ray.search.results import RESULTS_JSON, ResultRow, Role, read_results, selected_row
from fairtune_ray.search.run_folder import (
    CONFIG_FILE, SCORES_FILE, STAGES_DIR, TRIALS_FILE, load_test_scores, read_json, read_run_info,
)

FISHER_COLUMNS = {"layer", "param", "numel", "disparity_mean"}


@dataclass
class RunData:
    run_dir: Path
    info: dict
    results: list[ResultRow]
    trials: list[dict]
    config: Optional[dict] = None
    scores: Optional[dict] = None  # {method label: {labels, groups, scores [seeds, n]}} from test_scores.npz
    score_groups: dict = field(default_factory=dict)
    fisher: Optional[pd.DataFrame] = None
    histories: list[dict] = field(default_factory=list)
    history_source: str = ""
    parent_run: Optional[ParentRun] = None  # set when the MLflow store answered
    mlflow_note: str = ""
    group_names: list[str] = field(default_factory=list)
    bit_keys: list[str] = field(default_factory=list)
    selected_id: Optional[str] = None
    baseline_ids: dict = field(default_factory=dict)
    confirmation: list[dict] = field(default_factory=list)  # stages/confirm.json: the top trials' seed results
    lr_grid: dict = field(default_factory=dict)  # stages/baseline_lrs.json: each baseline's lr trials

    @property
    def mlflow_ok(self) -> bool:
        return self.parent_run is not None

    @property
    def objective(self) -> str:
        return ((self.config or {}).get("train") or {}).get("objective", "objective")

    @property
    def mode(self) -> str:
        try:
            return parse_objective(self.objective).mode
        except Exception:  # noqa: BLE001 - an objective this version cannot parse still gets a report
            return "max"

    @property
    def selected_result(self) -> Optional[ResultRow]:
        return selected_row(self.results)


def load_run(run_dir: Path, tracking_uri: Optional[str] = None, log: Callable = print) -> RunData:
    """Read a run folder; MLflow fills in what it lacks when the store answers."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    info = read_run_info(run_dir)
    results = read_result_rows(run_dir)
    trials = read_json(run_dir / TRIALS_FILE, [])
    if not results and not trials:
        raise FileNotFoundError(f"{run_dir} holds neither results.json nor trials.json: not a search run folder")
    data = RunData(run_dir, info, results, trials)
    _connect(data, tracking_uri, log)
    data.config = _load_config(run_dir, data.parent_run)
    if (run_dir / SCORES_FILE).is_file():
        data.scores, data.score_groups = load_test_scores(run_dir / SCORES_FILE)
    data.fisher = _load_fisher(run_dir, data.parent_run)
    _load_histories(data, log)
    _read_masks(data, log)
    data.selected_id = _selected_id(data)
    data.confirmation = read_json(run_dir / STAGES_DIR / "confirm.json", {}).get("trials", [])
    data.lr_grid = read_json(run_dir / STAGES_DIR / "baseline_lrs.json", {}).get("lr_grid", {})
    return data


def read_result_rows(run_dir: Path) -> list[ResultRow]:
    """results.json as rows; a file from before rows had a role goes through ``legacy_selected_role``."""
    rows = read_results(run_dir)
    flat = read_json(Path(run_dir) / RESULTS_JSON, [])
    return rows if all("role" in d for d in flat) else legacy_selected_role(rows)


def legacy_selected_role(rows: list[ResultRow]) -> list[ResultRow]:
    """Legacy compatibility, the one place a display label decides a role: results.json files written
    before rows had a ``role`` column marked the selected configuration only by "(selected)" in its label."""
    for r in rows:
        if "(selected)" in r.method:
            r.role = Role.SELECTED
    return rows


def _connect(data: RunData, tracking_uri: Optional[str], log: Callable) -> None:
    uri = tracking_uri or data.info.get("tracking_uri")
    data.parent_run, why = open_parent_run(uri, data.info.get("parent_run_id"))
    if data.parent_run is not None:
        data.mlflow_note = f"MLflow parent run {data.parent_run.run_id} in {uri}"
    else:
        data.mlflow_note = f"MLflow not used: {why}"
        log(f"report: {data.mlflow_note}")


def _load_config(run_dir: Path, parent: Optional[ParentRun]) -> Optional[dict]:
    path = run_dir / CONFIG_FILE
    if path.is_file():
        return yaml.safe_load(path.read_text())
    if parent is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        got = parent.download(CONFIG_FILE, Path(tmp))
        return yaml.safe_load(got.read_text()) if got else None


def find_fisher(folder: Path) -> Optional[pd.DataFrame]:
    """The first parquet file under ``folder`` that holds per-group Fisher statistics."""
    for p in sorted(folder.rglob("*.parquet")):
        try:
            df = pd.read_parquet(p)
        except Exception:  # noqa: BLE001 - an unreadable parquet file is not the one we look for
            continue
        if FISHER_COLUMNS <= set(df.columns):
            return df
    return None


def _load_fisher(run_dir: Path, parent: Optional[ParentRun]) -> Optional[pd.DataFrame]:
    """From the run folder, else from the parent run (the statistics live in a cache folder otherwise)."""
    found = find_fisher(run_dir)
    if found is not None or parent is None:
        return found
    parquet = [f for f in parent.artifact_files() if f.endswith(".parquet")]
    if not parquet:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        for f in parquet:
            parent.download(f, Path(tmp))
        return find_fisher(Path(tmp))


def _load_histories(data: RunData, log: Callable) -> None:
    """Per-epoch objective of each trial: MLflow child runs first, Tune's result files otherwise."""
    if data.parent_run is not None:
        try:
            data.histories = data.parent_run.child_histories()
            data.history_source = "MLflow child runs (metric history of `objective`)"
        except Exception as err:  # noqa: BLE001 - the report still renders without histories
            log(f"report: could not read the child runs ({type(err).__name__}: {err})")
    if not data.histories:
        data.histories = tune_histories(data.info.get("storage"), data.info.get("name"))
        data.history_source = "Tune result files" if data.histories else ""
    status = {str(t["trial_id"]): t.get("status") for t in data.trials}
    for h in data.histories:
        h["status"] = h.get("status") or status.get(str(h["trial_id"]))


def _read_masks(data: RunData, log: Callable) -> None:
    data.bit_keys = mask_bit_keys(data.trials)
    if data.bit_keys:
        data.group_names = mask_group_names(data.config, len(data.bit_keys), log)
        data.baseline_ids = baseline_trial_ids(data.trials, data.bit_keys)


def mask_group_names(cfg: Optional[dict], n_bits: int, log: Callable) -> list[str]:
    """Group labels from the mask space of the configured backbone (weights are not needed)."""
    if cfg:
        try:
            ec = config_from_dict(cfg, CONFIG_FILE)
            names = list(get_space(ec.mask.space, structure_model(ec)).group_names)
            if len(names) == n_bits:
                return names
            log(f"report: the mask space has {len(names)} groups but the trials have {n_bits} bits; using bit numbers")
        except Exception as err:  # noqa: BLE001 - bit numbers are a fine fallback for labels
            log(f"report: could not rebuild the mask space ({type(err).__name__}: {err}); using bit numbers")
    return [f"bit {i}" for i in range(n_bits)]


def _selected_id(data: RunData) -> Optional[str]:
    """The selected trial: as recorded, else the trial of the selected result row, else the best trial."""
    ids = {str(t["trial_id"]) for t in data.trials}
    sid = data.info.get("selected_trial_id")
    if sid is None and data.parent_run is not None:
        sid = data.parent_run.param(SELECTED_TRIAL_PARAM)
    if sid is not None and str(sid) in ids:
        return str(sid)
    sel = data.selected_result
    if sel is not None and data.bit_keys and ":" in sel.mask:
        found = matching_trial(data.trials, data.bit_keys, sel.mask.split(":", 1)[1], sel.lr)
        if found is not None:
            return found
    best = best_trials(data.trials, data.mode)
    return str(best[0]["trial_id"]) if best else None
