"""Registries need no central list: a package's modules are all imported, built-ins first."""
from __future__ import annotations

import importlib
import sys

from fairtune_ray.common.modules import import_submodules


def test_a_new_file_in_a_package_is_imported(tmp_path, monkeypatch):
    pkg = tmp_path / "toyplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("LOADED = []\n")
    for name in ("zeta", "alpha", "builtin", "registry"):
        (pkg / f"{name}.py").write_text(f"from toyplugins import LOADED\nLOADED.append({name!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("toyplugins")
    try:
        names = import_submodules(module, first=("builtin",), skip=("registry",))
        assert names == ["builtin", "alpha", "zeta"]
        assert module.LOADED == ["builtin", "alpha", "zeta"]  # registry left alone, the rest by name
    finally:
        for key in [k for k in sys.modules if k == "toyplugins" or k.startswith("toyplugins.")]:
            del sys.modules[key]
