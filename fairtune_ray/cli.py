"""The `fairtune-ray` command: pretrain, finetune, search, demo, fisher, data prepare, report."""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Optional

import yaml


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"--set expects key=value (e.g. search.num_samples=8), got '{p}'")
        k, v = p.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _load(args):
    from fairtune_ray.config import load_config

    return load_config(getattr(args, "config", None), overrides=_overrides(getattr(args, "set", [])))


def cmd_pretrain(args) -> int:
    from fairtune_ray.training.pretrain import ensure_pretrained

    cfg = _load(args)
    print(ensure_pretrained(cfg, force=args.force))
    return 0


def cmd_finetune(args) -> int:
    from fairtune_ray.data.loading import load_dataset
    from fairtune_ray.reporting.tables import group_table
    from fairtune_ray.search.preflight import check_mask_space
    from fairtune_ray.training.loop import fine_tune
    from fairtune_ray.training.pretrain import resolve_checkpoint
    from fairtune_ray.training.spec import TrialSpec

    cfg = _load(args)
    mask = args.mask
    if ":" in mask:
        check_mask_space(cfg.model_copy(update={"mask": cfg.mask.model_copy(update={"space": mask.split(":")[0]})}))
    data = load_dataset(cfg.data)
    checkpoint = resolve_checkpoint(cfg)
    spec = TrialSpec(mask=mask, lr=args.lr or cfg.train.lr, seed=cfg.train.seed if args.seed is None else args.seed,
                     epochs=args.epochs)

    def on_epoch(epoch, m):
        print(f"epoch {epoch:3d}  loss {m['train/loss']:.4f}  val {cfg.train.objective} {m['objective']:.4f}  "
              f"val AUC {m['val/overall_auc']:.4f}", flush=True)

    fit = fine_tune(cfg, spec, data, checkpoint, on_epoch=on_epoch, final_splits=("val", "test"))
    names = data.info.attributes[cfg.data.sensitive_attribute]
    print(f"\nmask {mask}: {fit.trainable_params:,} of {fit.total_params:,} parameters trainable; "
          f"best epoch {fit.best_epoch}; {fit.train_samples_per_s:.0f} training images/s")
    for split in ("val", "test"):
        print(f"\n{split} ({cfg.data.sensitive_attribute})\n{group_table(fit.final[split], names)}")
    return 0


def cmd_search(args) -> int:
    from fairtune_ray.search.run import run_search

    cfg = _load(args)
    if args.storage:
        cfg.search.storage = args.storage
    if args.num_samples:
        cfg.search.num_samples = args.num_samples
    out = run_search(cfg, tracking_uri=args.tracking_uri, resume=args.resume, name=args.name, address=args.address,
                     num_gpus=args.num_gpus)
    _write_report(out)
    return 0


def _write_report(out) -> None:
    from fairtune_ray.reporting.report import write_report

    print(f"report: {write_report(out.run_dir, tracking_uri=out.tracking_uri)}")


def cmd_demo(args) -> int:
    from fairtune_ray.config import load_config
    from fairtune_ray.search.run import run_search

    t0 = time.perf_counter()
    cfg = load_config(args.config, overrides={"search.num_samples": args.trials, **_overrides(args.set)})
    print(f"fairtune-ray demo: synthetic dermatology data, micro ViT, {cfg.search.num_samples} trials "
          f"({cfg.mask.space} mask space, objective {cfg.train.objective})", flush=True)
    out = run_search(cfg, tracking_uri=args.tracking_uri)
    _write_report(out)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s. Open the MLflow UI with:\n"
          f"  mlflow ui --backend-store-uri {out.tracking_uri}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairtune-ray", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp, required=True):
        if required:
            sp.add_argument("config", help="experiment YAML (experiments/*.yaml)")
        else:
            sp.add_argument("config", nargs="?", default=None, help="experiment YAML (default: embedded synthetic)")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=2 (repeatable)")

    sp = sub.add_parser("pretrain", help="pre-train and cache the micro backbone on the synthetic source task")
    with_config(sp, required=False)
    sp.add_argument("--force", action="store_true")
    sp.set_defaults(func=cmd_pretrain)

    sp = sub.add_parser("finetune", help="run one inner fine-tune and print per-group metrics")
    with_config(sp, required=False)
    sp.add_argument("--mask", default="full", help="space:bits, or full|linear|bitfit|attn_only|norm_only|lora")
    sp.add_argument("--lr", type=float)
    sp.add_argument("--epochs", type=int)
    sp.add_argument("--seed", type=int)
    sp.set_defaults(func=cmd_finetune)

    sp = sub.add_parser("search", help="run the Ray Tune search, retrain the winner and baselines, test")
    with_config(sp, required=False)
    sp.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlruns.db)")
    sp.add_argument("--storage", help="Tune storage path or URI (s3://...), overrides search.storage")
    sp.add_argument("--name", help="search name (needed with --resume)")
    sp.add_argument("--resume", action="store_true", help="continue an interrupted search with Tuner.restore")
    sp.add_argument("--address", help="Ray cluster address (default $RAY_ADDRESS or a local instance)")
    sp.add_argument("--num-gpus", type=int, help="GPUs of a local Ray instance (laptop mode)")
    sp.add_argument("--num-samples", type=int, help="number of trials, overrides search.num_samples")
    sp.set_defaults(func=cmd_search)

    sp = sub.add_parser("demo", help="the whole pipeline on the embedded synthetic data, on the CPU")
    sp.add_argument("config", nargs="?", default=None)
    sp.add_argument("--trials", type=int, default=16)
    sp.add_argument("--tracking-uri")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sp.set_defaults(func=cmd_demo)

    for register in _optional_registrars():
        register(sub)
    return p


def _optional_registrars():
    """Sub-commands that live next to the code they drive."""
    from fairtune_ray.data.cli_prepare import register as data_register

    regs = [data_register]
    for mod in ("fairtune_ray.fisher.cli", "fairtune_ray.reporting.cli"):
        try:
            regs.append(__import__(mod, fromlist=["register"]).register)
        except ModuleNotFoundError:
            pass
    return regs


def main(argv: Optional[list[str]] = None) -> int:
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # The legacy progress reporter honours our column choice (a compact table, not every metric).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from fairtune_ray.config import ConfigError
    from fairtune_ray.data.manifest import DataError
    from fairtune_ray.search.errors import SearchInterrupted

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SearchInterrupted as err:  # state is saved; the message says how to resume
        print(f"interrupted: {err}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
