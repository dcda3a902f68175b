"""Dataset adapters: each public dataset's own metadata files -> the normalised manifest.

``get_adapter("ham10000")`` returns an adapter instance; ``ADAPTERS`` lists them by name.
Names are case-insensitive and a few common spellings are accepted (``mimic_cxr``,
``harvard-gf3300``, ``oasis1``...). See each module's docstring for the files it expects.
"""
from __future__ import annotations

from fairtune_ray.data.adapters.base import Adapter, AdapterContext, AdapterResult, DataWarning
from fairtune_ray.data.adapters.chexpert import CheXpertAdapter
from fairtune_ray.data.adapters.fitzpatrick17k import Fitzpatrick17kAdapter
from fairtune_ray.data.adapters.generic import GenericAdapter
from fairtune_ray.data.adapters.ham10000 import HAM10000Adapter
from fairtune_ray.data.adapters.harvard_gf import HarvardGFAdapter
from fairtune_ray.data.adapters.mimic_cxr import MimicCxrAdapter
from fairtune_ray.data.adapters.oasis1 import Oasis1Adapter
from fairtune_ray.data.adapters.ol3i import OL3IAdapter
from fairtune_ray.data.adapters.papila import PapilaAdapter
from fairtune_ray.data.manifest import DataError

ADAPTERS: dict[str, type[Adapter]] = {cls.name: cls for cls in (
    HAM10000Adapter, Fitzpatrick17kAdapter, PapilaAdapter, CheXpertAdapter, MimicCxrAdapter,
    OL3IAdapter, HarvardGFAdapter, Oasis1Adapter, GenericAdapter)}

ALIASES = {
    "ham": "ham10000", "fitzpatrick": "fitzpatrick17k", "fitz17k": "fitzpatrick17k",
    "cxp": "chexpert", "mimic": "mimic-cxr", "mimic-cxr-jpg": "mimic-cxr", "mimic_cxr": "mimic-cxr",
    "harvard-gf3300": "harvard-gf", "harvard_gf": "harvard-gf", "harvardgf": "harvard-gf",
    "oasis": "oasis-1", "oasis1": "oasis-1", "oasis_1": "oasis-1", "csv": "generic", "table": "generic",
}


def adapter_names() -> list[str]:
    return list(ADAPTERS)


def get_adapter(name: str) -> Adapter:
    """The adapter registered under ``name`` (or an alias); unknown names list the known ones."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in ADAPTERS:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(ADAPTERS)}")
    return ADAPTERS[key]()


__all__ = ["ADAPTERS", "Adapter", "AdapterContext", "AdapterResult", "DataWarning", "adapter_names", "get_adapter"]
