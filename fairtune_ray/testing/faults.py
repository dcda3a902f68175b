"""Test-only fault injection for trials: NaN losses and crashes at chosen epochs.

Production code never imports this module. A test turns it on for the trial processes with
:func:`fault_env` (or by setting both variables itself) before Ray starts::

    monkeypatch.setenv(FAULT_ENV, "nan@epoch2:lr>1e-3")
    monkeypatch.setenv(HOOK_ENV, EPOCH_HOOK)
"""
from __future__ import annotations

import os
from fnmatch import fnmatch
from pathlib import Path
from typing import Optional

from fairtune_ray.search.epoch_hook import HOOK_ENV
from fairtune_ray.training.loop import NonFiniteLossError

FAULT_ENV = "FAIRTUNE_FAULT_INJECT"
EPOCH_HOOK = "fairtune_ray.testing.faults:epoch_hook"


def fault_env(rules: str) -> dict[str, str]:
    """The environment that makes every trial process run :func:`inject_fault` with ``rules``."""
    return {FAULT_ENV: rules, HOOK_ENV: EPOCH_HOOK}


def epoch_hook(*, epoch: int, spec, trial_dir: Optional[str] = None, rank: int = 0) -> None:
    """The ``FAIRTUNE_EPOCH_HOOK`` entry point."""
    inject_fault(epoch, spec, trial_dir, rank)


def inject_fault(epoch: int, spec, trial_dir: Optional[str] = None, rank: int = 0) -> None:
    """TEST-ONLY fault injection, read from $FAIRTUNE_FAULT_INJECT (unset in normal use).

    Rules separated by ';', each ``KIND@epochN[:COND]...``: KIND is ``nan`` (raises the loop's
    NonFiniteLossError, as a diverged loss does) or ``raise`` (a RuntimeError); it fires at the end
    of epoch N, before that epoch is reported. Conditions: ``lr>X``, ``lr<X``, ``bits=GLOB`` (the
    mask bits, fnmatch), ``rank=K`` (Train worker rank), ``once`` (first attempt of the trial only,
    remembered by a marker file in the trial folder). E.g. ``nan@epoch2:lr>1e-3;raise@epoch1:bits=0*:once``.
    """
    rules = os.environ.get(FAULT_ENV, "")
    for i, rule in enumerate(r.strip() for r in rules.split(";")):
        if not rule:
            continue
        head, *conds = rule.split(":")
        kind, _, at = head.partition("@")
        if kind not in ("nan", "raise") or not at.startswith("epoch"):
            raise ValueError(f"{FAULT_ENV}: cannot parse rule '{rule}' (expected nan|raise@epochN[:cond...])")
        if int(at[len("epoch"):]) != epoch:
            continue
        fire, once = True, False
        for c in conds:
            if c == "once":
                once = True
            elif c.startswith(("lr>", "lr<")):
                fire &= spec.lr > float(c[3:]) if c[2] == ">" else spec.lr < float(c[3:])
            elif c.startswith("bits="):
                fire &= fnmatch(spec.mask.split(":")[-1], c[5:])
            elif c.startswith("rank="):
                fire &= rank == int(c[5:])
            else:
                raise ValueError(f"{FAULT_ENV}: unknown condition '{c}' in rule '{rule}'")
        if not fire:
            continue
        if once:
            marker = Path(trial_dir or ".") / f".fault_injected_{i}"
            if marker.exists():
                continue
            marker.touch()
        if kind == "nan":
            raise NonFiniteLossError(f"training loss became nan at epoch {epoch} (injected by {FAULT_ENV})")
        raise RuntimeError(f"fault injected by {FAULT_ENV} at epoch {epoch}")
