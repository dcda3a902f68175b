"""An optional per-epoch hook inside trial processes, named by an environment variable.

``FAIRTUNE_EPOCH_HOOK=package.module:function`` makes every trial (and every Ray Train worker)
call ``function(epoch=, spec=, trial_dir=, rank=)`` at the end of each epoch, before the epoch is
reported. Tests use it to inject faults (``fairtune_ray.testing.faults``) without production code
importing test code; it is read in the trial process, so set it before Ray starts.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable, Optional

HOOK_ENV = "FAIRTUNE_EPOCH_HOOK"


def load_epoch_hook() -> Optional[Callable[..., None]]:
    target = os.environ.get(HOOK_ENV, "").strip()
    if not target:
        return None
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"{HOOK_ENV}: expected 'package.module:function', got '{target}'")
    return getattr(importlib.import_module(module), name)
