"""Test-only probe of a trial process's state, for the tests that a reused process leaks nothing.

``FAIRTUNE_EPOCH_HOOK=fairtune_ray.testing.probes:epoch_hook`` with ``FAIRTUNE_PROBE_DIR=<folder>``
makes every trial write ``<folder>/<trial id>-epoch<N>.json`` at the end of each epoch: what a previous trial in the same process could have left behind: the process id, torch's
thread count, the seed torch's generator was last seeded with, and how many modules and parameter
tensors are alive (a model or optimizer kept from an earlier trial would add to them). The folder is
named rather than taken from the trial's context: in a reused process Ray 2.60's
``get_trial_dir()`` is the trial's working directory, not the trial folder a fresh process gets.
Production code never imports this module.
"""
from __future__ import annotations

import gc
import json
import os
import warnings
from pathlib import Path
from typing import Optional

import torch
from ray import tune

PROBE_FILE = "{trial_id}-epoch{epoch}.json"
PROBE_HOOK = "fairtune_ray.testing.probes:epoch_hook"
PROBE_DIR_ENV = "FAIRTUNE_PROBE_DIR"


def process_state() -> dict:
    objects = gc.get_objects()
    with warnings.catch_warnings():  # isinstance over every object touches torch's deprecated aliases
        warnings.simplefilter("ignore", FutureWarning)
        modules = sum(isinstance(o, torch.nn.Module) for o in objects)
        parameters = sum(isinstance(o, torch.nn.Parameter) for o in objects)
    return {"pid": os.getpid(), "threads": torch.get_num_threads(), "initial_seed": torch.initial_seed(),
            "modules": modules, "parameters": parameters}


def epoch_hook(*, epoch: int, spec, trial_dir: Optional[str] = None, rank: int = 0) -> None:
    folder = os.environ.get(PROBE_DIR_ENV)
    if folder and rank == 0:
        trial_id = tune.get_context().get_trial_id()
        state = {**process_state(), "epoch": epoch, "mask": spec.mask, "lr": spec.lr}
        (Path(folder) / PROBE_FILE.format(trial_id=trial_id, epoch=epoch)).write_text(json.dumps(state))
