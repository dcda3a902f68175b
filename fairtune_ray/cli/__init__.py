"""The `fairtune-ray` command: pretrain, finetune, search, demo, fisher, data prepare, report, evaluate, predict.

Each command lives in its own module with a ``register(subparsers)``; they are listed once in
``COMMAND_MODULES``. Command modules import only argparse-level code at the top and load Ray,
MLflow and torch inside the handler, so ``fairtune-ray --help`` stays fast. Bad input of any kind
(an ``InputError``: config, mask, checkpoint, Fisher cache; a ``DataError``; a missing file) is
reported here, in one place, as one ``error: ...`` line and exit code 2, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Optional

from fairtune_ray.common.errors import InputError
from fairtune_ray.search.errors import SearchInterrupted

COMMAND_MODULES = ("fairtune_ray.cli.train", "fairtune_ray.cli.search", "fairtune_ray.cli.data",
                   "fairtune_ray.cli.fisher", "fairtune_ray.cli.report", "fairtune_ray.cli.evaluate",
                   "fairtune_ray.cli.predict")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairtune-ray", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # The legacy progress reporter honours our column choice (a compact table, not every metric).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SearchInterrupted as err:  # state is saved; the message says how to resume
        print(f"interrupted: {err}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
