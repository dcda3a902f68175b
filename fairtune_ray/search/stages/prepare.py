"""Stage 1, prepare: every check before Ray starts, then the run folder, the MLflow parent run,
the data, the weights (shipped to every node) and, for the Fisher method, the prior.

Order matters for the user: config errors surface before any Ray process exists, and the parent
run exists before any trial, so nothing recorded is lost if the search is interrupted.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

import ray
import yaml
from mlflow.tracking import MlflowClient

from fairtune_ray.common.files import atomic_write_text
from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.fingerprint import dataset_fingerprint
from fairtune_ray.data.groups import attribute_label, report_small_groups
from fairtune_ray.data.loading import load_dataset
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.models.shipping import CheckpointLike, checkpoint_sha256, ship_checkpoint
from fairtune_ray.search.fisher_prior import compute_and_log_prior
from fairtune_ray.search.preflight import check_data_coverage, preflight
from fairtune_ray.search.run_folder import CONFIG_FILE, ENVIRONMENT_FILE, RUN_INFO, read_run_info, update_run_info
from fairtune_ray.search.space import uses_fisher
from fairtune_ray.search.stages.types import Prepared, SearchRequest
from fairtune_ray.search.warm_start import load_warm_start, record_warm_start
from fairtune_ray.tracking import resolve_tracking_uri, search_description, start_parent_run
from fairtune_ray.tracking.environment import describe_environment, environment_tags
from fairtune_ray.tracking.mlflow_runs import ROLE_TAG
from fairtune_ray.training.pretrain import resolve_checkpoint
from fairtune_ray.training.process import trial_threads


def prepare(request: SearchRequest, log: Callable = print) -> Prepared:
    cfg = request.cfg
    space = preflight(cfg, request.address)  # config errors surface here, before Ray starts
    uri = resolve_tracking_uri(request.tracking_uri, cfg.tracking.uri)
    name = request.name or cfg.search.name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = cfg.search.storage if _is_uri(cfg.search.storage) else str(Path(cfg.search.storage).resolve())
    run_dir = Path("runs" if _is_uri(storage) else storage) / name
    warm = load_warm_start(cfg, space.n_bits, uri, run_dir)  # an incompatible earlier study fails here too
    data = load_dataset(cfg.data)  # data.small_groups: reject fails here, before Ray starts
    report_small_groups(data.groups, log)
    check_data_coverage(cfg, data)  # a group val/test cannot measure fails now, not after the search
    checkpoint = _local_checkpoint(cfg, log)
    parent = _open_parent_run(cfg, request, uri, name, run_dir, space.n_bits)
    update_run_info(run_dir, name=name, parent_run_id=parent, tracking_uri=uri, storage=storage)
    _save_config(cfg, run_dir, uri, parent)
    record_warm_start(warm, run_dir, MlflowClient(uri), parent, log)
    log(f"MLflow parent run {parent} in {uri}")

    init_ray(cfg, request.address, request.num_gpus)
    # Trials, retrains and the Fisher task may run on nodes without the driver's file.
    checkpoint = ship_checkpoint(checkpoint)
    record_environment(cfg, run_dir, data, checkpoint, MlflowClient(uri), parent)
    # Before the config is handed to the trials: the prior sets cfg.fisher.importance_path.
    prior = (compute_and_log_prior(cfg, data, checkpoint, space, MlflowClient(uri), parent, log)
             if uses_fisher(cfg) else [])
    return Prepared(cfg, name, run_dir, storage, uri, parent, cfg.mask.space, space.n_bits,
                    data.groups.names, request.resume, prior, data, checkpoint)


def record_environment(cfg: ExperimentConfig, run_dir: Path, data: PackedDataset, checkpoint: CheckpointLike, client: MlflowClient,
                       parent: str) -> dict:
    """environment.json in the run folder and on the parent run (artifact and ``fairtune.env.*`` tags)."""
    env = describe_environment(cfg, trial_threads(cfg), checkpoint_sha256(checkpoint) if checkpoint else "none",
                               dataset_fingerprint(data))
    atomic_write_text(run_dir / ENVIRONMENT_FILE, json.dumps(env, indent=2))
    client.log_dict(parent, env, ENVIRONMENT_FILE)
    for key, value in environment_tags(env).items():
        client.set_tag(parent, key, value)
    return env


def _is_uri(path: str) -> bool:
    return "://" in path


def _local_checkpoint(cfg: ExperimentConfig, log: Callable) -> Optional[str]:
    checkpoint = resolve_checkpoint(cfg, log=log)
    if checkpoint and not _is_uri(checkpoint):
        checkpoint = str(Path(checkpoint).resolve())  # trials run in their own folders (Tune changes the cwd)
    return checkpoint


def _open_parent_run(cfg: ExperimentConfig, request: SearchRequest, uri: str, name: str, run_dir: Path,
                     n_bits: int) -> str:
    """A new parent run, or with ``--resume`` the earlier search's (from the run folder or MLflow)."""
    previous = read_run_info(run_dir) if request.resume else {}
    if request.resume and not previous:  # e.g. a new `ray job submit` working dir: find the parent run by name
        previous = find_search_parent(uri, cfg.tracking.experiment, name)
    if request.resume and not previous:
        raise FileNotFoundError(f"--resume: no search named '{name}' in {run_dir.parent} ({RUN_INFO} missing)")
    return start_parent_run(uri, cfg.tracking.experiment, name,
                            params={**flatten(cfg.model_dump()), "mask.n_bits": n_bits,
                                    "data.sensitive_attribute": attribute_label(cfg.data.sensitive_attribute)},
                            tags={"fairtune.method": cfg.search.method, "fairtune.objective": cfg.train.objective},
                            run_id=previous.get("parent_run_id"),
                            description=search_description(name, cfg.search.method, cfg.mask.space,
                                                           cfg.search.num_samples, cfg.train.objective))


def _save_config(cfg: ExperimentConfig, run_dir: Path, uri: str, parent: str) -> None:
    """config.yaml in the run folder and on the parent run (the report rebuilds the mask space from it)."""
    text = yaml.safe_dump(cfg.model_dump(), sort_keys=False)
    atomic_write_text(run_dir / CONFIG_FILE, text)
    MlflowClient(uri).log_text(parent, text, CONFIG_FILE)


def find_search_parent(uri: str, experiment: str, name: str) -> dict:
    """The MLflow parent run of an earlier search with this name (newest first), or {}."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.`{ROLE_TAG}` = 'search' and attributes.run_name = '{name}'")
    return {"parent_run_id": runs[0].info.run_id} if runs else {}


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


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
