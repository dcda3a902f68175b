"""The registry of dataset adapters: each adapter class registers itself with :func:`register_adapter`.

Why a registry: adding a dataset is one new module with one decorated class (plus its import in
``fairtune_ray.data.adapters``); the CLI, ``get_adapter`` and the tests read the registry.
Names are case-insensitive and a few common spellings are accepted as aliases.
"""
from __future__ import annotations

from typing import Callable, Iterable, TypeVar

from fairtune_ray.data.adapters.base import Adapter
from fairtune_ray.data.manifest import DataError

ADAPTERS: dict[str, type[Adapter]] = {}
"""Adapter classes by name, in registration order (the order the CLI lists them)."""
ALIASES: dict[str, str] = {}
"""Other spellings (lower case) -> registered name."""

A = TypeVar("A", bound=type[Adapter])


def register_adapter(name: str, *, aliases: Iterable[str] = ()) -> Callable[[A], A]:
    """Class decorator: register an :class:`Adapter` subclass as dataset ``name`` (sets ``cls.name``)."""
    key = name.strip().lower()
    spellings = [a.strip().lower() for a in aliases]

    def decorate(cls: A) -> A:
        taken = [n for n in [key, *spellings] if n in ADAPTERS or n in ALIASES]
        if taken:
            raise ValueError(f"dataset adapter name(s) {taken} already registered")
        if cls.__dict__.get("name") not in (None, "", key):
            raise ValueError(f"{cls.__name__}.name is {cls.name!r} but it is registered as {key!r}")
        cls.name = key
        ADAPTERS[key] = cls
        ALIASES.update((a, key) for a in spellings)
        return cls
    return decorate


def unregister_adapter(name: str) -> None:
    """Remove an adapter and its aliases (tests register toy adapters and remove them again)."""
    key = name.strip().lower()
    ADAPTERS.pop(key, None)
    for alias in [a for a, target in ALIASES.items() if target == key]:
        del ALIASES[alias]


def adapter_names() -> list[str]:
    """Registered dataset names, in registration order."""
    return list(ADAPTERS)


def get_adapter(name: str) -> Adapter:
    """The adapter registered under ``name`` (or an alias); unknown names list the known ones."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in ADAPTERS:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(ADAPTERS)}")
    return ADAPTERS[key]()
