"""The trials of a search as ``trials.json`` and Tune's result files hold them (plain dicts).

A trial is ``{trial_id, config: {m00.., lr, ...}, metrics, objective, epochs, status}``; its mask
is the bits ``m00``, ``m01``, ... of its config. With ``search.constraint`` the report marks each
trial feasible or not, with the same rule selection used (``trial_feasibility``).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fairtune_ray.config import config_from_dict
from fairtune_ray.search.constraint import resolve_constraint, trial_violations
from fairtune_ray.search.space import config_bits

_BIT_KEY = re.compile(r"^m(\d+)$")


def is_finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def mask_bit_keys(trials: list[dict]) -> list[str]:
    """The mask-bit config keys of the trials, in bit order (empty for a method without a mask search)."""
    return sorted({k for t in trials for k in t.get("config", {}) if _BIT_KEY.match(k)}, key=lambda k: int(k[1:]))


def trial_bits(trial: dict, keys: list[str]) -> str:
    """The trial's mask as a bit string, e.g. ``"010110"``."""
    return config_bits(trial["config"], keys)


def baseline_trial_ids(trials: list[dict], keys: list[str]) -> dict[str, str]:
    """The first all-ones (``full``) and all-zeros (``linear``) trial, when the search sampled them."""
    ids: dict[str, str] = {}
    for t in trials:
        bits = trial_bits(t, keys)
        if bits == "1" * len(keys) and t["config"].get("peft", "mask") == "mask":  # all ones with adapters: not full
            ids.setdefault("full", str(t["trial_id"]))
        elif bits == "0" * len(keys):
            ids.setdefault("linear", str(t["trial_id"]))
    return ids


def best_trials(trials: list[dict], mode: str) -> list[dict]:
    """Trials with a finite objective, best first."""
    ok = [t for t in trials if is_finite(t.get("objective"))]
    return sorted(ok, key=lambda t: float(t["objective"]), reverse=mode == "max")


def matching_trial(trials: list[dict], keys: list[str], bits: str, lr: float) -> Optional[str]:
    """The id of the trial with this mask and learning rate (how a retrained row maps back to its trial)."""
    for t in trials:
        if trial_bits(t, keys) == bits and math.isclose(float(t["config"].get("lr", -1)), float(lr), rel_tol=1e-6):
            return str(t["trial_id"])
    return None


def tune_histories(storage: Optional[str], name: Optional[str]) -> list[dict]:
    """Fallback: per-epoch objective from Tune's per-trial ``result.json`` files (local storage only)."""
    if not storage or not name or "://" in storage:
        return []
    out = []
    for f in sorted((Path(storage) / name).glob("*/result.json")):
        steps, vals, tid = [], [], None
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "objective" in r and "epoch" in r:
                steps.append(int(r["epoch"]))
                vals.append(float(r["objective"]))
                tid = r.get("trial_id", tid)
        if steps:
            out.append({"trial_id": tid or f.parent.name, "name": f.parent.name, "status": None, "steps": steps,
                        "values": vals})
    return out


@dataclass
class Feasibility:
    """``search.constraint`` applied to the trials as selection applied it (``search/constraint.py``)."""

    text: str
    resolved: str = ""  # the bounds with the baselines' values fixed; "" when they could not be
    violations: dict[str, float] = field(default_factory=dict)  # trial id -> violation at its recorded epoch
    selected_violation: Optional[float] = None  # of the selected trial (its confirmed seed mean if confirmed)
    n_pool: int = 0  # the candidates selection chose among (the confirmed trials, else every usable trial)
    n_feasible: int = 0
    error: str = ""

    def feasible(self, trial_id) -> Optional[bool]:
        v = self.violations.get(str(trial_id))
        return None if v is None else v == 0.0


def trial_feasibility(trials: list[dict], config: Optional[dict], confirmation: list[dict],
                      selected_id: Optional[str]) -> Optional[Feasibility]:
    """The constraint of the run's config on its trials, or None when the run has none."""
    text = ((config or {}).get("search") or {}).get("constraint")
    if not text:
        return None
    try:
        cfg = config_from_dict(config, "config.yaml")
        constraint = resolve_constraint(cfg, trials, len(mask_bit_keys(trials)))
    except Exception as err:  # noqa: BLE001 - the report still renders, saying why feasibility is missing
        return Feasibility(str(text), error=str(err))
    usable = [t for t in trials if t.get("status") != "failed"]
    pool = confirmation or usable
    pool_v = trial_violations(constraint, pool)
    out = Feasibility(constraint.text, constraint.resolved_text,
                      {str(t["trial_id"]): v for t, v in zip(usable, trial_violations(constraint, usable))},
                      n_pool=len(pool), n_feasible=sum(1 for v in pool_v if v == 0.0))
    out.selected_violation = next((v for t, v in zip(pool, pool_v) if str(t["trial_id"]) == selected_id), None)
    return out
