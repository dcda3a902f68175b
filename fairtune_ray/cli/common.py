"""What every command shares: the config argument and ``--set key=value`` overrides."""
from __future__ import annotations

import argparse

import yaml

from fairtune_ray.config import ExperimentConfig, load_config


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"--set expects key=value (e.g. search.num_samples=8), got '{p}'")
        k, v = p.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def load_args_config(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(getattr(args, "config", None), overrides=parse_overrides(getattr(args, "set", [])))


def add_config_arguments(sp: argparse.ArgumentParser, required: bool = True) -> None:
    if required:
        sp.add_argument("config", help="experiment YAML (experiments/*.yaml)")
    else:
        sp.add_argument("config", nargs="?", default=None, help="experiment YAML (default: embedded synthetic)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set train.epochs=2 (repeatable)")
