"""From YAML (or a dict) to a validated ``ExperimentConfig``; errors name the file and key path.

A bad value or an unknown key fails at load time with its key path (e.g. ``search.asha.grace_period``)
and the reason, before any Ray process starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from fairtune_ray.config.base import ConfigError
from fairtune_ray.config.experiment import ExperimentConfig


def _format_errors(err: ValidationError, source: str) -> str:
    """One line for one bad key (the CLI prints it as one ``error:`` line); else one indented line per key."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        shown = e["type"] != "extra_forbidden" and not isinstance(e.get("input"), dict)
        lines.append(f"{path}: {msg}" + (f" (got {e['input']!r})" if shown else ""))
    if len(lines) == 1:
        return f"invalid configuration in {source}: {lines[0]}"
    return "\n  ".join([f"invalid configuration in {source}:", *lines])


def _set_path(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def config_from_dict(data: dict, source: str = "<dict>", overrides: Optional[dict] = None) -> ExperimentConfig:
    data = dict(data or {})
    for k, v in (overrides or {}).items():
        _set_path(data, k, v)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None, overrides: Optional[dict] = None) -> ExperimentConfig:
    """Load and validate a YAML experiment; ``None`` gives the embedded synthetic default."""
    if path is None:
        return config_from_dict({}, "<default>", overrides)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return config_from_dict(data, str(p), overrides)
