"""``fairtune-ray search`` and ``fairtune-ray demo``: the whole study (fairtune_ray.study)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

from fairtune_ray.cli.common import add_config_arguments, load_args_config, parse_overrides
from fairtune_ray.config import ConfigError, load_config


def cmd_search(args) -> int:
    from fairtune_ray.study import run_search  # lazy: Ray, MLflow and torch

    cfg = load_args_config(args, {"search.storage": args.storage or None, "search.num_samples": args.num_samples})
    _check_register(cfg, args.register_model)
    out = run_search(cfg, tracking_uri=args.tracking_uri, resume=args.resume, name=args.name, address=args.address,
                     num_gpus=args.num_gpus)
    _hand_off(out, args.register_model)
    return 0


def cmd_demo(args) -> int:
    from fairtune_ray.study import run_search  # lazy: Ray, MLflow and torch

    t0 = time.perf_counter()
    cfg = load_config(args.config, overrides={"search.num_samples": args.trials, **parse_overrides(args.set)})
    print(f"fairtune-ray demo: synthetic dermatology data, micro ViT, {cfg.search.num_samples} trials "
          f"({cfg.mask.space} mask space, objective {cfg.train.objective})", flush=True)
    _check_register(cfg, args.register_model)
    out = run_search(cfg, tracking_uri=args.tracking_uri)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s. Open the MLflow UI with:\n"
          f"  mlflow ui --backend-store-uri {out.tracking_uri}\nthen the search's trials (runs table of the "
          f"model-training view):\n  {_trials_link(out)}")
    _hand_off(out, args.register_model)
    return 0


def _trials_link(out) -> str:
    from fairtune_ray.tracking import trials_link  # lazy: MLflow

    try:
        return trials_link(out.tracking_uri, out.parent_run_id)
    except Exception as err:  # noqa: BLE001 - a hint only
        return f"(not available: {type(err).__name__}: {err})"


def _check_register(cfg, name: Optional[str]) -> None:
    """--register-model needs an exported selected model: fail before the search, not after it."""
    if name and cfg.search.export == "none":
        raise ConfigError(f"--register-model {name}: search.export is 'none', so no model is exported to register "
                          "(set search.export: selected or all)")


def _hand_off(out, register_name: Optional[str]) -> None:
    """The last lines: where the selected model is saved and, when asked, its registered version."""
    from fairtune_ray.export.mlflow_model import register_model  # lazy: MLflow
    from fairtune_ray.search.run_folder import MODEL_DIR  # lazy: the run folder's names (numpy, metrics)

    model = Path(out.run_dir) / MODEL_DIR
    if register_name and model.is_dir():
        version = register_model(out.tracking_uri, out.parent_run_id, register_name)
        print(f"registered: models:/{version.name}/{version.version} in {out.tracking_uri}")
    if model.is_dir():
        print(f"model: {model.resolve()}")


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("search", help="run the Ray Tune search, retrain the winner and baselines, test")
    add_config_arguments(sp, required=False)
    sp.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlruns.db)")
    sp.add_argument("--storage", help="Tune storage path or URI (s3://...), overrides search.storage")
    sp.add_argument("--name", help="search name (needed with --resume)")
    sp.add_argument("--resume", action="store_true", help="continue an interrupted search with Tuner.restore")
    sp.add_argument("--address", help="Ray cluster address (default $RAY_ADDRESS or a local instance)")
    sp.add_argument("--num-gpus", type=int, help="GPUs of a local Ray instance (laptop mode)")
    sp.add_argument("--num-samples", type=int, help="number of trials, overrides search.num_samples")
    sp.add_argument("--register-model", metavar="NAME",
                    help="register the selected model in the MLflow Model Registry as a new version of NAME")
    sp.set_defaults(func=cmd_search)

    sp = sub.add_parser("demo", help="the whole pipeline on the embedded synthetic data, on the CPU")
    sp.add_argument("config", nargs="?", default=None)
    sp.add_argument("--trials", type=int, default=16)
    sp.add_argument("--tracking-uri")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--register-model", metavar="NAME", help="register the selected model as a new version of NAME")
    sp.set_defaults(func=cmd_demo)
