"""Dataset adapters: each public dataset's own metadata files -> the normalised manifest.

``get_adapter("ham10000")`` returns an adapter instance; ``ADAPTERS`` lists them by name.
Names are case-insensitive and a few common spellings are accepted (``mimic_cxr``,
``harvard-gf3300``, ``oasis1``...). See each module's docstring for the files it expects.
Each adapter registers itself with ``@register_adapter``; importing this package imports every
module in it, so a new adapter is one new file. The built-in ones come first, in the order
``ADAPTERS`` and the CLI show.
"""
from __future__ import annotations

import sys

from fairtune_ray.common.modules import import_submodules
from fairtune_ray.data.adapters.base import Adapter, AdapterContext, AdapterResult, DataWarning
from fairtune_ray.data.adapters.registry import (ADAPTERS, ALIASES, adapter_names, get_adapter, register_adapter,
                                                 unregister_adapter)

import_submodules(sys.modules[__name__], first=("ham10000", "fitzpatrick17k", "papila", "chexpert", "mimic_cxr",
                                               "ol3i", "harvard_gf", "oasis1", "generic"),
                  skip=("base", "registry", "readers", "tables", "columns"))

__all__ = ["ADAPTERS", "ALIASES", "Adapter", "AdapterContext", "AdapterResult", "DataWarning", "adapter_names",
           "get_adapter", "register_adapter", "unregister_adapter"]
