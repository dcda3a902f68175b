"""What every command shares: the config argument and ``--set key=value`` overrides."""
from __future__ import annotations

import argparse

import yaml

from fairtune_ray.config import ConfigError, ExperimentConfig, load_config


def parse_overrides(pairs: list[str]) -> dict:
    """``--set`` pairs as {dotted key: YAML value}; a malformed one is a ConfigError (one ``error:`` line)."""
    out = {}
    for p in pairs or []:
        k, eq, v = p.partition("=")
        if not eq or not k.strip():
            raise ConfigError(f"--set expects key=value (e.g. search.num_samples=8), got '{p}'")
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {k.strip()}: '{v}' is not a YAML value ({' '.join(str(err).split())})") from None
    return out


def load_args_config(args: argparse.Namespace, flags: dict | None = None) -> ExperimentConfig:
    """The config with ``--set`` overrides, then ``flags`` (a command's own options, as dotted keys;
    None values are left out), all validated together so a bad one names its key."""
    overrides = parse_overrides(getattr(args, "set", []))
    overrides.update({k: v for k, v in (flags or {}).items() if v is not None})
    return load_config(getattr(args, "config", None), overrides=overrides)


def add_config_arguments(sp: argparse.ArgumentParser, required: bool = True) -> None:
    if required:
        sp.add_argument("config", help="experiment YAML (experiments/*.yaml)")
    else:
        sp.add_argument("config", nargs="?", default=None, help="experiment YAML (default: embedded synthetic)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set train.epochs=2 (repeatable)")
