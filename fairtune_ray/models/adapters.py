"""PEFT methods through HF ``peft``, placed by the mask (docs/design.md#mask-spaces).

The mask bits decide *where* adapters go, the method decides *how*: an adapter is inserted into an
``nn.Linear`` only when its weight belongs to a parameter group whose bit is on and its name ends in
one of the chosen target kinds (``qkv``, ``proj``, ``fc1``, ``fc2`` in a timm ViT block). Every base
weight is then frozen; only the adapters and the classification head train. A fixed PEFT baseline
(``lora``, ``dora``, ``ia3``, ``loha``) is the same method with every group on.

Why ``peft.inject_adapter_in_model`` rather than ``get_peft_model``: it adapts the timm model in
place, so the rest of the project keeps seeing a timm model (``get_classifier``, ``pretrained_cfg``)
and not a ``PeftModel`` wrapper. The adapted layers' base weights are renamed (``qkv.weight`` ->
``qkv.base_layer.weight``); exports merge the adapters back (:func:`merge_adapters`), so an exported
model is a plain backbone again.

Why ``import peft`` is lazy (in :func:`_peft` only): peft imports transformers (5-10 s), and most
runs never insert an adapter. VeRA is not offered: its projections are state shared between layers,
which ``inject_adapter_in_model`` refuses.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from torch import nn

from fairtune_ray.models.param_groups import MaskSpaceError, head_param_names

DEFAULT_KINDS: tuple[str, ...] = ("qkv", "proj", "fc1", "fc2")
"""Target kinds of the PEFT baselines: every ViT block's attention and MLP linears."""
FEEDFORWARD_KINDS: tuple[str, ...] = ("fc2",)
"""Layers whose *input* (IA3) scales: the MLP's hidden activation, as in the (IA)^3 paper."""
NO_ADAPTER = "mask"
"""The value of the ``peft`` dimension that inserts no adapter: the mask's groups train their own weights."""


@dataclass(frozen=True)
class AdapterSpec:
    """A PEFT method and its settings. ``alpha`` None = the rank (scaling 1); IA3 reads neither."""

    method: str
    rank: int = 4
    alpha: Optional[float] = None
    kinds: tuple[str, ...] = DEFAULT_KINDS

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise MaskSpaceError(f"unknown PEFT method {self.method!r}; known: {peft_method_names()}")
        if self.rank < 1:
            raise MaskSpaceError(f"PEFT rank must be >= 1, got {self.rank}")
        if not self.kinds:
            raise MaskSpaceError(f"PEFT method {self.method!r} needs target kinds, e.g. {list(DEFAULT_KINDS)}")

    @property
    def scale_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else float(self.rank)

    @property
    def label(self) -> str:
        """What the results table and report print beside the mask, e.g. ``lora r4 a8 on qkv,proj``."""
        settings = "" if self.method == "ia3" else f" r{self.rank} a{self.scale_alpha:g}"
        return f"{self.method}{settings} on {','.join(self.kinds)}"


ConfigBuilder = Callable[[Any, AdapterSpec, list[str]], Any]
"""``build(peft_module, spec, target_module_names) -> peft config``."""


@dataclass(frozen=True)
class PeftMethod:
    """A registered PEFT method: how to build its peft config, and what it is."""

    name: str
    build: ConfigBuilder
    description: str = ""
    uses_rank: bool = True


_METHODS: dict[str, PeftMethod] = {}


def register_peft(name: str, *, uses_rank: bool = True) -> Callable[[ConfigBuilder], ConfigBuilder]:
    """Decorator: register ``build(peft, spec, targets) -> PeftConfig`` as PEFT method ``name``."""
    def decorate(build: ConfigBuilder) -> ConfigBuilder:
        if name in _METHODS or name == NO_ADAPTER:
            raise ValueError(f"PEFT method {name!r} is already registered")
        doc = (build.__doc__ or "").strip().splitlines()
        _METHODS[name] = PeftMethod(name, build, doc[0] if doc else "", uses_rank)
        return build
    return decorate


def peft_method_names() -> list[str]:
    """The registered PEFT methods, in registration order."""
    return list(_METHODS)


def peft_method(name: str) -> PeftMethod:
    if name not in _METHODS:
        raise MaskSpaceError(f"unknown PEFT method {name!r}; known: {peft_method_names()}")
    return _METHODS[name]


@register_peft("lora")
def _lora(peft: Any, spec: AdapterSpec, targets: list[str]) -> Any:
    """LoRA: W + (alpha / r) B A, B = 0 at the start."""
    return peft.LoraConfig(r=spec.rank, lora_alpha=spec.scale_alpha, lora_dropout=0.0, bias="none",
                           target_modules=targets)


@register_peft("dora")
def _dora(peft: Any, spec: AdapterSpec, targets: list[str]) -> Any:
    """DoRA: LoRA on the direction of W plus a trained magnitude per output."""
    return peft.LoraConfig(r=spec.rank, lora_alpha=spec.scale_alpha, lora_dropout=0.0, bias="none",
                           use_dora=True, target_modules=targets)


@register_peft("ia3", uses_rank=False)
def _ia3(peft: Any, spec: AdapterSpec, targets: list[str]) -> Any:
    """(IA)^3: a learned vector scales each adapted layer's output (the MLP's fc2: its input)."""
    ff = [t for t in targets if t.rpartition(".")[2] in FEEDFORWARD_KINDS]
    return peft.IA3Config(target_modules=targets, feedforward_modules=ff)


@register_peft("loha")
def _loha(peft: Any, spec: AdapterSpec, targets: list[str]) -> Any:
    """LoHa: a Hadamard product of two rank-r updates (LyCORIS)."""
    return peft.LoHaConfig(r=spec.rank, alpha=spec.scale_alpha, target_modules=targets)


def _peft() -> Any:
    import peft  # lazy: peft imports transformers (5-10 s); only runs that insert adapters need it

    return peft


# --------------------------------------------------------------------------- placement
def linear_kind_names(model: nn.Module, kinds: Iterable[str]) -> list[str]:
    """Names of the ``nn.Linear`` modules (not the head) whose last name part is one of ``kinds``."""
    kinds = set(kinds)
    head = set(head_param_names(model))
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and n.rpartition(".")[2] in kinds and f"{n}.weight" not in head]


def adapter_targets(model: nn.Module, on: set[str], kinds: Iterable[str]) -> list[str]:
    """The linears an adapter goes into: of the chosen kinds, with their weight in ``on`` (the
    parameters whose mask group is on)."""
    return [n for n in linear_kind_names(model, kinds) if f"{n}.weight" in on]


def kinds_reason(model: nn.Module, kinds: Iterable[str] = DEFAULT_KINDS) -> Optional[str]:
    """None when the backbone has some linear of these kinds, else why not (shown to the user)."""
    kinds = list(kinds)
    if linear_kind_names(model, kinds):
        return None
    return (f"no nn.Linear named {kinds} outside the head (PEFT adapters go into those; a CNN such as a "
            "ResNet has none)")


def insert_adapters(model: nn.Module, on: set[str], spec: AdapterSpec) -> list[str]:
    """Insert ``spec``'s adapters where the mask is on; freeze every other parameter but the head.

    Returns the adapted module names (none when no chosen linear is on: then only the head trains).
    """
    if has_adapters(model):
        raise ValueError("the model already has PEFT adapters; build a fresh backbone to apply another mask")
    targets = adapter_targets(model, on, spec.kinds)
    head = set(head_param_names(model))
    for p in model.parameters():
        p.requires_grad_(False)
    if targets:
        peft = _peft()
        config = peft_method(spec.method).build(peft, spec, targets)
        peft.inject_adapter_in_model(config, model)  # marks only the adapters trainable
    for n, p in model.named_parameters():
        if n in head:
            p.requires_grad_(True)
    return targets


def adapted_modules(model: nn.Module) -> list[str]:
    """Names of the layers that hold an adapter (empty when peft was never imported)."""
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    if tuners is None:
        return []
    return [n for n, m in model.named_modules() if isinstance(m, tuners.BaseTunerLayer)]


def has_adapters(model: nn.Module) -> bool:
    return bool(adapted_modules(model))


def merge_adapters(model: nn.Module) -> nn.Module:
    """Merge every adapter into its base weight and put the plain base layer back, in place (as
    peft's ``merge_and_unload`` does): the parameter names and shapes are the backbone's again."""
    for name in adapted_modules(model):
        layer = model.get_submodule(name)
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model

