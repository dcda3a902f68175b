"""`fairtune-ray search`: preflight, Tune search, selection, retrain-and-test, tracking.

Order matters for the user: every check that can fail on the config or data runs before Ray
starts; the MLflow parent run exists before any trial, so nothing recorded is lost if the search
is interrupted; results land in the run folder and in MLflow together.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import ray
import yaml
from mlflow.tracking import MlflowClient
from ray import tune

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.loading import load_dataset
from fairtune_ray.metrics import parse_objective
from fairtune_ray.models.shipping import ship_checkpoint
from fairtune_ray.reporting.tables import results_table, write_results
from fairtune_ray.reporting.report import save_test_scores
from fairtune_ray.search.callbacks import TrialStatusCallback
from fairtune_ray.search.errors import SearchInterrupted
from fairtune_ray.search.preflight import preflight
from fairtune_ray.search.retrain import Candidate, retrain_and_test
from fairtune_ray.search.selection import select_trial
from fairtune_ray.search.space import bit_keys, build_param_space, initial_points, spec_from_trial_config, uses_fisher, uses_mask_bits
from fairtune_ray.search.trial import run_trial
from fairtune_ray.search.tuner import TUNE_METRIC, build_tuner
from fairtune_ray.tracking import finish_child_runs, resolve_tracking_uri, start_parent_run
from fairtune_ray.tracking.mlflow_runs import log_metrics, metric_key
from fairtune_ray.training.pretrain import resolve_checkpoint
from fairtune_ray.training.spec import TrialSpec

RUN_INFO = "fairtune_run.json"


@dataclass
class SearchOutcome:
    name: str
    run_dir: Path
    parent_run_id: str
    tracking_uri: str
    trials: list[dict]
    selected: dict
    rows: list[dict] = field(default_factory=list)
    statuses: dict = field(default_factory=dict)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _is_uri(path: str) -> bool:
    return "://" in path


def init_ray(cfg: ExperimentConfig, address: Optional[str] = None, num_gpus: Optional[int] = None) -> None:
    """Connect to a cluster (RAY_ADDRESS / --address) or start a local instance.

    Locally, multi-worker trials need CPUs for the trial plus its workers, so the logical CPU
    count may exceed the cores (Ray only schedules by it).
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    cpus = os.cpu_count() or 2
    if cfg.trial.workers > 1:
        cpus = max(cpus, int(math.ceil(cfg.trial.workers * cfg.trial.resources.cpu + 1)))
    # Multi-worker trials: Ray Train's placement-group cleaner asks the state API (the dashboard).
    ray.init(num_cpus=cpus, num_gpus=num_gpus, include_dashboard=cfg.trial.workers > 1, log_to_driver=True)


def trial_records(result_grid, cfg: ExperimentConfig, statuses: dict) -> list[dict]:
    """One record per trial: its configuration and the validation metrics of its best epoch."""
    objective = parse_objective(cfg.train.objective)
    records = []
    for res in result_grid:
        df = res.metrics_dataframe
        if df is None or df.empty or TUNE_METRIC not in df:
            continue
        values = df[TUNE_METRIC].astype(float)
        idx = (values.idxmax() if objective.mode == "max" else values.idxmin()) if values.notna().any() else df.index[-1]
        best = df.loc[idx].to_dict()
        metrics = {k[len("val/"):]: v for k, v in best.items() if isinstance(k, str) and k.startswith("val/")}
        trial_id = res.metrics.get("trial_id") or Path(res.path).name
        records.append({"trial_id": trial_id, "config": dict(res.config), "metrics": metrics,
                        "objective": float(best[TUNE_METRIC]), "epochs": int(df["epoch"].max()),
                        "trainable_params": int(best.get("trainable_params", 0)),
                        "status": statuses.get(trial_id, ("unknown", ""))[0]})
    return records


def _bits(record: dict, n_bits: int) -> str:
    return "".join(str(int(record["config"].get(k, 0))) for k in bit_keys(n_bits))


def run_search(cfg: ExperimentConfig, *, tracking_uri: Optional[str] = None, resume: bool = False,
               name: Optional[str] = None, address: Optional[str] = None, num_gpus: Optional[int] = None,
               log=print) -> SearchOutcome:
    space = preflight(cfg, address)  # config errors surface here, before Ray starts
    n_bits = space.n_bits
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    name = name or cfg.search.name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = cfg.search.storage if _is_uri(cfg.search.storage) else str(Path(cfg.search.storage).resolve())
    run_dir = Path("runs" if _is_uri(storage) else storage) / name
    info_path = run_dir / RUN_INFO
    data = load_dataset(cfg.data)
    group_names = data.info.attributes[cfg.data.sensitive_attribute]
    checkpoint = resolve_checkpoint(cfg, log=log)
    if checkpoint and not _is_uri(checkpoint):
        checkpoint = str(Path(checkpoint).resolve())  # trials run in their own folders (Tune changes the cwd)

    previous = json.loads(info_path.read_text()) if resume and info_path.exists() else {}
    if resume and not previous:  # e.g. a new `ray job submit` working dir: find the parent run by name
        previous = find_search_parent(uri, cfg.tracking.experiment, name)
    if resume and not previous:
        raise FileNotFoundError(f"--resume: no search named '{name}' in {run_dir.parent} ({RUN_INFO} missing)")
    parent = start_parent_run(uri, cfg.tracking.experiment, name,
                              params={**flatten(cfg.model_dump()), "mask.n_bits": n_bits},
                              tags={"fairtune.method": cfg.search.method, "fairtune.objective": cfg.train.objective},
                              run_id=previous.get("parent_run_id"))
    run_dir.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps({"name": name, "parent_run_id": parent, "tracking_uri": uri, "storage": storage}))
    client = MlflowClient(uri)
    config_text = yaml.safe_dump(cfg.model_dump(), sort_keys=False)
    (run_dir / "config.yaml").write_text(config_text)  # the report rebuilds the mask space from it
    client.log_text(parent, config_text, "config.yaml")
    log(f"MLflow parent run {parent} in {uri}")

    init_ray(cfg, address, num_gpus)
    # Trials, retrains and the Fisher task may run on nodes without the driver's file.
    checkpoint = ship_checkpoint(checkpoint)
    tracking = {"uri": uri, "parent_run_id": parent, "method": cfg.search.method}
    # Before the config is dumped for the trials: it sets cfg.fisher.importance_path.
    prior = fisher_prior(cfg, data, checkpoint, space, client, parent, log) if uses_fisher(cfg) else []
    trainable = tune.with_parameters(run_trial, cfg_dict=cfg.model_dump(), data=data, checkpoint=checkpoint,
                                     space_name=cfg.mask.space, n_bits=n_bits, tracking=tracking)
    status_cb = TrialStatusCallback(cfg.train.epochs)
    points = initial_points(cfg, n_bits, prior)
    if uses_fisher(cfg):
        from fairtune_ray.fisher.integration import fisher_seed_points

        points = fisher_seed_points(cfg, n_bits, points)  # a Fisher-only trial for the "Fisher" row
    exp_path = f"{storage.rstrip('/')}/{name}"
    if resume and tune.Tuner.can_restore(exp_path):
        log(f"resuming search from {exp_path}")
        tuner = tune.Tuner.restore(exp_path, trainable=tune.with_resources(trainable, _trial_resources(cfg)),
                                   resume_unfinished=True, resume_errored=True)
    else:
        tuner = build_tuner(cfg, trainable, build_param_space(cfg, n_bits), points, storage, name, [status_cb],
                            reuse_actors=cfg.search.reuse_actors)
    result_grid = tuner.fit()
    statuses = dict(status_cb.statuses)
    for res in result_grid:  # trials finished before a resume are not seen by this run's callback
        tid = res.metrics.get("trial_id") if res.metrics else None
        if tid and tid not in statuses and res.error is None:
            statuses[tid] = ("completed", "") if int(res.metrics.get("epoch", 0)) >= cfg.train.epochs else (
                "stopped_early", f"stopped by ASHA after epoch {res.metrics.get('epoch')}")
        elif tid and res.error is not None and tid not in statuses:
            statuses[tid] = ("failed", str(res.error)[:3000])
    finish_child_runs(uri, parent, statuses)
    finished = result_grid.num_terminated + result_grid.num_errors
    if finished < cfg.search.num_samples:  # tune.run returns normally after SIGINT, with its state saved
        client.set_terminated(parent, "KILLED")
        msg = (f"search '{name}' interrupted after {finished} of {cfg.search.num_samples} trials; continue it with: "
               f"fairtune-ray search <config> --resume --name {name} --storage {storage}")
        log(msg)
        raise SearchInterrupted(msg)
    records = trial_records(result_grid, cfg, statuses)
    if not records:
        client.set_terminated(parent, "FAILED")
        raise RuntimeError(f"no trial reported a result; see the Ray logs under {exp_path}")

    objective = parse_objective(cfg.train.objective)
    full_bits = "1" * n_bits
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        log(f"{len(failed)} trial(s) failed (see the MLflow tag fairtune.failure); selecting among the others")
    records_all, records = records, [r for r in records if r["status"] != "failed"]
    if not records:
        client.set_terminated(parent, "FAILED")
        raise RuntimeError(f"every trial failed; see the MLflow child runs (tag fairtune.failure) and {exp_path}")
    baseline = next((r for r in records if uses_mask_bits(cfg) and _bits(r, n_bits) == full_bits), None)
    selected = select_trial(records, cfg.search.selection, objective, baseline=baseline["metrics"] if baseline else None)
    sel_spec = spec_from_trial_config(selected["config"], cfg, cfg.mask.space, n_bits, seed=cfg.train.seed)
    log(f"selected ({cfg.search.selection}): {sel_spec.mask} lr={sel_spec.lr:.2e} "
        f"val {cfg.train.objective}={selected['objective']:.4f}")

    candidates = [Candidate("FairTune (selected)" if cfg.search.method == "fairtune" else
                            ("Fisher (selected)" if cfg.search.method == "fisher" else "FairTune+Fisher (selected)"),
                            sel_spec)]
    if cfg.search.method == "both":
        fisher_only = [r for r in records if _bits(r, n_bits) == full_bits and
                       spec_from_trial_config(r["config"], cfg, cfg.mask.space, n_bits).uses_fisher]
        if fisher_only:
            best_f = select_trial(fisher_only, "best", objective)
            candidates.append(Candidate("Fisher", spec_from_trial_config(best_f["config"], cfg, cfg.mask.space, n_bits)))
    lr = min(max(cfg.train.lr, cfg.search.lr_min), cfg.search.lr_max)
    names = {"full": "Full fine-tuning", "linear": "Linear probe", "bitfit": "BitFit", "attn_only": "Attention only",
             "norm_only": "Norm only", "lora": "LoRA"}
    candidates += [Candidate(names.get(b, b), TrialSpec(mask=b, lr=lr, label=b)) for b in cfg.search.baselines]

    data_ref = ray.put(data)
    rows = retrain_and_test(cfg, candidates, data_ref, checkpoint, group_names, log=log)
    table = results_table(rows)
    csv_path, json_path = write_results(rows, run_dir)
    (run_dir / "trials.json").write_text(json.dumps(records_all, indent=2, default=str))
    scores_path = save_test_scores(rows, run_dir / "test_scores.npz", group_names)  # for the report's ROC curves
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "selected_trial_id": selected["trial_id"]}))
    log_parent_results(client, parent, rows, records_all, selected, sel_spec, table,
                       [csv_path, json_path, run_dir / "trials.json", scores_path])
    outcome = SearchOutcome(name, run_dir, parent, uri, records_all, selected, rows, statuses)
    log("\n" + table)
    log(f"\nresults: {csv_path}\nMLflow UI: mlflow ui --backend-store-uri {uri}")
    return outcome


def find_search_parent(uri: str, experiment: str, name: str) -> dict:
    """The MLflow parent run of an earlier search with this name (newest first), or {}."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.`fairtune.role` = 'search' and attributes.run_name = '{name}'")
    return {"parent_run_id": runs[0].info.run_id} if runs else {}


def _trial_resources(cfg: ExperimentConfig) -> dict:
    if cfg.trial.workers > 1:
        return {"cpu": 0.01, "gpu": 0}
    return {"cpu": cfg.trial.resources.cpu, "gpu": cfg.trial.resources.gpu}


def log_parent_results(client: MlflowClient, parent: str, rows: list[dict], records: list[dict], selected: dict,
                       sel_spec: TrialSpec, table: str, files: list[Path]) -> None:
    """The parent run holds the selected configuration, the results table and a readable summary."""
    client.log_param(parent, "selected.mask", sel_spec.mask)
    client.log_param(parent, "selected.lr", f"{sel_spec.lr:.3e}")
    client.log_param(parent, "selected.trial_id", selected["trial_id"])
    for row in rows:
        slug = metric_key(row["method"].lower().replace(" ", "_").replace("(", "").replace(")", ""))
        log_metrics(client, parent, {f"{slug}/{k}": v for k, v in row.items()
                                     if k.startswith("test/") or k in ("trainable_params", "val_objective")}, step=0)
    for f in files:
        client.log_artifact(parent, str(f))
    client.log_text(parent, table, "results_table.md")
    sel_row = rows[0]
    n_stopped = sum(1 for r in records if r["status"] == "stopped_early")
    summary = (f"**{len(records)} trials** ({n_stopped} stopped early by ASHA). Selected `{sel_spec.mask}` "
               f"(lr {sel_spec.lr:.2e}, {sel_row['trainable_params']:,} trainable parameters): test worst-group AUC "
               f"{sel_row['test/min_auc']:.3f}, overall AUC {sel_row['test/overall_auc']:.3f}.\n\n{table}")
    client.set_tag(parent, "mlflow.note.content", summary)
    client.set_terminated(parent, "FINISHED")


def fisher_prior(cfg, data, checkpoint, space, client, parent, log) -> list[str]:
    """Compute (or reuse) the per-group Fisher, log it to the parent run, and return the prior
    masks; sets ``cfg.fisher.importance_path`` for the trials and retrains
    (``fairtune_ray.fisher.integration.compute_and_log_prior``)."""
    from fairtune_ray.fisher.integration import compute_and_log_prior

    return compute_and_log_prior(cfg, data, checkpoint, space, client, parent, log)
