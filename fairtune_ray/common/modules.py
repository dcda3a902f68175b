"""Import every module of a package, so modules that register themselves (mask spaces, dataset
adapters) need no central list: adding one is adding a file."""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Sequence


def import_submodules(package: ModuleType, first: Sequence[str] = (), skip: Sequence[str] = ()) -> list[str]:
    """Import ``first`` in that order (a registry's display order), then every other module of
    ``package`` in name order; names in ``skip`` (infrastructure modules) are left alone.
    Returns the names imported."""
    others = sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                    if m.name not in first and m.name not in skip and not m.name.startswith("_"))
    for name in [*first, *others]:
        importlib.import_module(f"{package.__name__}.{name}")
    return [*first, *others]
