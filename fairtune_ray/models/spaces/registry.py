"""The registry of mask spaces: each space registers its builder with :func:`register_space`.

A *space* splits a backbone's parameters into groups, one mask bit each; a *baseline* is a
fixed space without bits (full, linear, ...). Why a registry: adding a space is one new module
with one decorated builder; ``get_space`` / ``list_spaces`` / ``spaces_for`` and the ``Mask``
checks read the registry, so nothing else changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from torch import nn

from fairtune_ray.models.param_groups import MaskSpaceError, head_param_names

FitCheck = Callable[[nn.Module], Optional[str]]
"""Returns None when a space fits the model, else the reason it does not (shown to the user)."""


@dataclass
class MaskSpace:
    """Parameter groups of one space on one backbone: ``param_groups[i]`` is switched by bit i."""

    name: str
    n_bits: int
    group_names: list[str]
    param_groups: list[list[str]]
    always_trainable: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (len(self.group_names) == len(self.param_groups) == self.n_bits):
            raise ValueError(f"space {self.name!r}: n_bits, group_names and param_groups disagree")


@dataclass(frozen=True)
class SpaceLayout:
    """What a space builder returns: its bit groups (name, parameters) in bit order, and the
    parameters it keeps trainable besides the head (which is always trainable)."""

    groups: Sequence[tuple[str, Sequence[str]]] = ()
    also_trainable: Sequence[str] = ()


SpaceBuilder = Callable[[nn.Module], SpaceLayout]


@dataclass(frozen=True)
class SpaceSpec:
    """A registered space: how to build it, when it fits, and whether it has bits."""

    name: str
    build: SpaceBuilder
    fits: FitCheck
    baseline: bool
    description: str


def fits_any(model: nn.Module) -> Optional[str]:
    """The fit check of spaces that work on every backbone."""
    return None


_SPACES: dict[str, SpaceSpec] = {}


def register_space(name: str, *, fits: FitCheck = fits_any,
                   baseline: bool = False) -> Callable[[SpaceBuilder], SpaceBuilder]:
    """Decorator: register ``build(model) -> SpaceLayout`` as mask space ``name``.

    ``baseline=True`` registers a fixed mask without bits (its layout has no groups). Spaces
    are listed in registration order (the import order in ``fairtune_ray.models.spaces``).
    """
    def decorate(build: SpaceBuilder) -> SpaceBuilder:
        if name in _SPACES:
            raise ValueError(f"mask space {name!r} is already registered")
        doc = (build.__doc__ or "").strip().splitlines()
        _SPACES[name] = SpaceSpec(name, build, fits, baseline, doc[0] if doc else "")
        return build
    return decorate


def unregister_space(name: str) -> None:
    """Remove a registered space (tests register toy spaces and remove them again)."""
    _SPACES.pop(name, None)


def space_spec(name: str) -> Optional[SpaceSpec]:
    """The registered space ``name``, or None."""
    return _SPACES.get(name)


def is_baseline(name: str) -> bool:
    """``name`` is a registered fixed mask without bits."""
    spec = _SPACES.get(name)
    return spec is not None and spec.baseline


def list_spaces(include_baselines: bool = False) -> list[str]:
    """Names of all searchable spaces (and the fixed baselines if asked)."""
    searched = [n for n, s in _SPACES.items() if not s.baseline]
    return searched + (baseline_names() if include_baselines else [])


def baseline_names() -> list[str]:
    """Names of the fixed masks without bits."""
    return [n for n, s in _SPACES.items() if s.baseline]


def spaces_for(model: nn.Module, include_baselines: bool = False) -> list[str]:
    """Spaces (and optionally baselines) that fit this backbone."""
    return [n for n in list_spaces(include_baselines) if _SPACES[n].fits(model) is None]


def _what_fits(model: nn.Module) -> str:
    return (f"spaces that fit: {spaces_for(model)}, "
            f"baselines that fit: {[b for b in baseline_names() if _SPACES[b].fits(model) is None]}")


def get_space(name: str, model: nn.Module) -> MaskSpace:
    """The groups of space ``name`` on ``model``; raises MaskSpaceError when it does not fit."""
    cls = type(model).__name__
    spec = _SPACES.get(name)
    if spec is None:
        raise MaskSpaceError(f"unknown mask space {name!r} for {cls}; {_what_fits(model)}")
    reason = spec.fits(model)
    if reason is not None:
        raise MaskSpaceError(f"mask space {name!r} does not fit backbone {cls} ({reason}); {_what_fits(model)}")
    layout = spec.build(model)
    if spec.baseline == bool(layout.groups):
        raise ValueError(f"space {name!r}: a baseline has no bit groups and a searched space needs some")
    keep = set(head_param_names(model)) | set(layout.also_trainable)
    always = [n for n, _ in model.named_parameters() if n in keep]
    groups = [(g, list(names)) for g, names in layout.groups]
    return MaskSpace(name, len(groups), [g for g, _ in groups], [p for _, p in groups], always)
