"""FairTune-style binary masks over parameter groups (DESIGN 2.1).

A *space* splits a backbone's parameters into groups, one bit each; a *mask* is a space name plus
a 0/1 string. ``apply_mask`` turns it into ``requires_grad`` flags. The classification head is
always trainable; patch embedding, cls token, pos embed and the final norm stay frozen unless a
space says otherwise. Fixed baselines (full, linear, bitfit, attn_only, norm_only, lora) are
masks without bits, serialised by their names, so every trial logs a mask the same way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from torch import nn

from fairtune_ray.models.backbones import is_resnet, is_vit
from fairtune_ray.models.lora import DEFAULT_TARGETS, apply_lora, lora_target_names

SEARCH_SPACES: tuple[str, ...] = ("block", "attn_mlp_norm", "attn_norm1_mlp_norm2", "attn_params", "stage")
"""Spaces with bits (searched by Tune)."""
BASELINES: tuple[str, ...] = ("full", "linear", "bitfit", "attn_only", "norm_only", "lora")
"""Fixed masks without bits, written by their bare names."""

# Which role each child of a timm ViT block plays: layer scale (ls1 / gamma_1) and q/k norms
# (inside attn) belong to the attention branch, ls2 / gamma_2 to the MLP branch.
_VIT_CHILD_ROLE: dict[str, str] = {
    "norm1": "norm1", "attn": "attn", "ls1": "attn", "gamma_1": "attn",
    "norm2": "norm2", "mlp": "mlp", "ls2": "mlp", "gamma_2": "mlp",
}
# timm's own norm classes (RmsNorm, LayerNorm2d, BatchNormAct2d, FrozenBatchNorm2d, ...).
_NORM_CLASS = re.compile(r"Norm(?:Act)?\d*d?$")
_ATTN_PARAMS: tuple[str, ...] = ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias")


class MaskSpaceError(ValueError):
    """A mask or space that does not fit the backbone (wrong space, length or characters)."""


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


# --------------------------------------------------------------------------- model inspection
def head_param_names(model: nn.Module) -> list[str]:
    """Parameter names of the classification head (``model.get_classifier()``)."""
    if hasattr(model, "get_classifier"):
        ids = {id(p) for p in model.get_classifier().parameters()}
        return [n for n, p in model.named_parameters() if id(p) in ids]
    clf = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(clf, str):
        return [n for n, _ in model.named_parameters() if n.startswith(clf + ".")]
    raise MaskSpaceError(f"cannot find the classification head of {type(model).__name__}")


def _vit_block_params(model: nn.Module) -> list[dict[str, list[str]]]:
    """Per block: role ('norm1', 'attn', 'norm2', 'mlp', or '?child') -> parameter names."""
    out: list[dict[str, list[str]]] = []
    for i, block in enumerate(model.blocks):  # type: ignore[union-attr]
        roles: dict[str, list[str]] = {}
        for n, _ in block.named_parameters():
            child = n.split(".", 1)[0]
            role = _VIT_CHILD_ROLE.get(child, "?" + child)
            roles.setdefault(role, []).append(f"blocks.{i}.{n}")
        out.append(roles)
    return out


def _norm_param_names(model: nn.Module) -> list[str]:
    """Parameters owned directly by normalisation layers (LayerNorm, BatchNorm, RMSNorm, ...)."""
    names: list[str] = []
    for mname, mod in model.named_modules():
        is_norm = isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm,
                                   nn.modules.instancenorm._InstanceNorm))
        if is_norm or _NORM_CLASS.search(type(mod).__name__):
            names.extend(f"{mname}.{n}" if mname else n for n, _ in mod.named_parameters(recurse=False))
    return names


def _unmapped(blocks: list[dict[str, list[str]]]) -> list[str]:
    return sorted({r[1:] for b in blocks for r in b if r.startswith("?")})


# --------------------------------------------------------------------------- space builders
def _build_block(model: nn.Module, head: list[str]) -> MaskSpace:
    blocks = _vit_block_params(model)
    groups = [[n for names in b.values() for n in names] for b in blocks]
    return MaskSpace("block", len(groups), [f"blocks.{i}" for i in range(len(groups))], groups, head)


def _build_branches(model: nn.Module, head: list[str], name: str, layout: Sequence[tuple[str, tuple[str, ...]]]) -> MaskSpace:
    blocks = _vit_block_params(model)
    bad = _unmapped(blocks)
    if bad:
        raise MaskSpaceError(f"space {name!r} does not fit {type(model).__name__}: block children {bad} have no branch")
    gnames: list[str] = []
    groups: list[list[str]] = []
    for i, b in enumerate(blocks):
        for label, roles in layout:
            gnames.append(f"blocks.{i}.{label}")
            groups.append([n for r in roles for n in b.get(r, [])])
    return MaskSpace(name, len(groups), gnames, groups, head)


def _build_attn_params(model: nn.Module, head: list[str]) -> MaskSpace:
    have = {n for n, _ in model.named_parameters()}
    gnames: list[str] = []
    for i in range(len(model.blocks)):  # type: ignore[arg-type]
        for suffix in _ATTN_PARAMS:
            n = f"blocks.{i}.{suffix}"
            if n not in have:
                raise MaskSpaceError(f"space 'attn_params' does not fit {type(model).__name__}: no parameter {n}")
            gnames.append(n)
    always = head + (["pos_embed"] if "pos_embed" in have else [])
    return MaskSpace("attn_params", len(gnames), gnames, [[n] for n in gnames], always)


def _build_stage(model: nn.Module, head: list[str]) -> MaskSpace:
    names = [n for n, _ in model.named_parameters()]
    groups = [[n for n in names if n.startswith(f"layer{k}.")] for k in range(1, 5)]
    return MaskSpace("stage", 4, [f"layer{k}" for k in range(1, 5)], groups, head)


def _fixed(name: str, always: Iterable[str], model: nn.Module) -> MaskSpace:
    keep = set(always)
    return MaskSpace(name, 0, [], [], [n for n, _ in model.named_parameters() if n in keep])


def _build_baseline(name: str, model: nn.Module, head: list[str]) -> MaskSpace:
    all_names = [n for n, _ in model.named_parameters()]
    if name == "full":
        return _fixed(name, all_names, model)
    if name in ("linear", "lora"):  # lora adapters are added by apply_lora itself
        return _fixed(name, head, model)
    if name == "bitfit":
        return _fixed(name, head + [n for n in all_names if n == "bias" or n.endswith(".bias")], model)
    if name == "attn_only":
        attn = [n for b in _vit_block_params(model) for n in b.get("attn", [])]
        return _fixed(name, head + attn, model)
    if name == "norm_only":
        return _fixed(name, head + _norm_param_names(model), model)
    raise AssertionError(name)


# Fit checks: each returns None when the space fits, else the reason it does not.
def _vit_fit(m: nn.Module) -> str | None:
    return None if is_vit(m) else "needs a ViT with .blocks"


def _resnet_fit(m: nn.Module) -> str | None:
    return None if is_resnet(m) else "needs a ResNet with layer1..layer4"


def _any_model(m: nn.Module) -> str | None:
    return None


def _branches_fit(m: nn.Module) -> str | None:
    if not is_vit(m):
        return "needs a ViT with .blocks"
    bad = _unmapped(_vit_block_params(m))
    return f"block children {bad} have no branch" if bad else None


def _attn_params_fit(m: nn.Module) -> str | None:
    if not is_vit(m):
        return "needs a ViT with .blocks"
    have = {n for n, _ in m.named_parameters()}
    miss = [f"blocks.{i}.{s}" for i in range(len(m.blocks)) for s in _ATTN_PARAMS  # type: ignore[arg-type]
            if f"blocks.{i}.{s}" not in have]
    return f"missing {miss[:3]}" if miss else None


def _lora_fit(m: nn.Module) -> str | None:
    return None if lora_target_names(m, DEFAULT_TARGETS) else f"no nn.Linear named {list(DEFAULT_TARGETS)}"


def _norm_fit(m: nn.Module) -> str | None:
    return None if _norm_param_names(m) else "has no normalisation layers with parameters"


_FITS: dict[str, Callable[[nn.Module], str | None]] = {
    "block": _vit_fit,
    "attn_mlp_norm": _branches_fit,
    "attn_norm1_mlp_norm2": _branches_fit,
    "attn_params": _attn_params_fit,
    "stage": _resnet_fit,
    "full": _any_model,
    "linear": _any_model,
    "bitfit": _any_model,
    "attn_only": _vit_fit,
    "norm_only": _norm_fit,
    "lora": _lora_fit,
}


def list_spaces(include_baselines: bool = False) -> list[str]:
    """Names of all searchable spaces (and the fixed baselines if asked)."""
    return list(SEARCH_SPACES) + (list(BASELINES) if include_baselines else [])


def spaces_for(model: nn.Module, include_baselines: bool = False) -> list[str]:
    """Spaces (and optionally baselines) that fit this backbone."""
    return [s for s in list_spaces(include_baselines) if _FITS[s](model) is None]


def get_space(name: str, model: nn.Module) -> MaskSpace:
    """The groups of space ``name`` on ``model``; raises MaskSpaceError when it does not fit."""
    cls = type(model).__name__
    if name not in _FITS:
        raise MaskSpaceError(
            f"unknown mask space {name!r} for {cls}; spaces that fit: {spaces_for(model)}, "
            f"baselines that fit: {[b for b in BASELINES if _FITS[b](model) is None]}"
        )
    reason = _FITS[name](model)
    if reason is not None:
        raise MaskSpaceError(
            f"mask space {name!r} does not fit backbone {cls} ({reason}); spaces that fit: {spaces_for(model)}, "
            f"baselines that fit: {[b for b in BASELINES if _FITS[b](model) is None]}"
        )
    head = head_param_names(model)
    if name == "block":
        return _build_block(model, head)
    if name == "attn_mlp_norm":
        return _build_branches(model, head, name, (("norm", ("norm1", "norm2")), ("attn", ("attn",)), ("mlp", ("mlp",))))
    if name == "attn_norm1_mlp_norm2":
        return _build_branches(model, head, name, (("norm1", ("norm1",)), ("attn", ("attn",)),
                                                   ("norm2", ("norm2",)), ("mlp", ("mlp",))))
    if name == "attn_params":
        return _build_attn_params(model, head)
    if name == "stage":
        return _build_stage(model, head)
    return _build_baseline(name, model, head)


# --------------------------------------------------------------------------- masks
@dataclass(frozen=True)
class Mask:
    """A space name plus a 0/1 string; baselines have no bits. ``str()`` is the logged form."""

    space: str
    bits: str = ""

    def __post_init__(self) -> None:
        if self.space in BASELINES:
            if self.bits:
                raise MaskSpaceError(f"baseline mask {self.space!r} takes no bits, got {self.bits!r}")
            return
        if self.space not in SEARCH_SPACES:
            raise MaskSpaceError(f"unknown mask space {self.space!r}; known: {list_spaces(True)}")
        if not self.bits or set(self.bits) - {"0", "1"}:
            raise MaskSpaceError(
                f"mask bits for space {self.space!r} must be a non-empty string of '0'/'1', got {self.bits!r}"
            )

    def __str__(self) -> str:
        return self.space if self.is_baseline else f"{self.space}:{self.bits}"

    @property
    def is_baseline(self) -> bool:
        return self.space in BASELINES

    @property
    def n_bits(self) -> int:
        return len(self.bits)

    def as_list(self) -> list[int]:
        return [int(c) for c in self.bits]

    @classmethod
    def parse(cls, text: "str | Mask", model: nn.Module | None = None) -> "Mask":
        """``"space:0101..."`` or a baseline name; with ``model`` the bit length is checked too."""
        if isinstance(text, Mask):
            if model is not None:
                text.check(get_space(text.space, model))
            return text
        t = str(text).strip()
        space, sep, bits = t.partition(":")
        space, bits = space.strip(), bits.strip()
        if not sep and space in SEARCH_SPACES:
            raise MaskSpaceError(f"mask {t!r}: space {space!r} needs bits, e.g. '{space}:0101...'")
        if model is not None and space in _FITS:
            n = get_space(space, model).n_bits  # also raises if the space does not fit
            if space in SEARCH_SPACES and (len(bits) != n or set(bits) - {"0", "1"}):
                raise MaskSpaceError(
                    f"mask {t!r}: space {space!r} on {type(model).__name__} expects {n} bits of '0'/'1', "
                    f"got {len(bits)} characters"
                )
        return cls(space, bits)

    def check(self, space: MaskSpace) -> None:
        """Raise MaskSpaceError unless this mask has exactly ``space.n_bits`` bits."""
        if space.name != self.space:
            raise MaskSpaceError(f"mask {self} is for space {self.space!r}, not {space.name!r}")
        if len(self.bits) != space.n_bits:
            raise MaskSpaceError(
                f"mask {self} has {len(self.bits)} bits; space {space.name!r} expects {space.n_bits}"
            )

    @classmethod
    def all_ones(cls, space: str, n: int) -> "Mask":
        return cls(space, "1" * n)

    @classmethod
    def all_zeros(cls, space: str, n: int) -> "Mask":
        return cls(space, "0" * n)


def tune_bit_keys(n_bits: int) -> list[str]:
    """Tune config keys for the bits: ``m00, m01, ...`` (zero-padded so they sort in order)."""
    width = max(2, len(str(max(n_bits - 1, 0))))
    return [f"m{i:0{width}d}" for i in range(n_bits)]


def bits_param_names(space: MaskSpace | int) -> list[str]:
    """Tune keys for a space's bits (see :func:`tune_bit_keys`)."""
    return tune_bit_keys(space if isinstance(space, int) else space.n_bits)


def _bit(v: Any) -> str:
    if isinstance(v, str) and v in ("0", "1"):
        return v
    if isinstance(v, (bool, int, float)) and float(v) in (0.0, 1.0):
        return str(int(v))
    raise MaskSpaceError(f"mask bit must be 0 or 1, got {v!r}")


def mask_from_bits(space: str | MaskSpace, bits: "Sequence[Any] | str | Mapping[str, Any]") -> Mask:
    """Build a mask from a 0/1 list, a bit string, or a Tune config holding ``m00..`` keys."""
    sp_name = space if isinstance(space, str) else space.name
    if isinstance(bits, Mapping):
        if not isinstance(space, MaskSpace):
            keys = sorted(k for k in bits if isinstance(k, str) and k[:1] == "m" and k[1:].isdigit())
        else:
            keys = bits_param_names(space)
            missing = [k for k in keys if k not in bits]
            if missing:
                raise MaskSpaceError(f"config lacks mask bits {missing[:5]} for space {sp_name!r} ({space.n_bits} bits)")
        seq: Sequence[Any] | str = [bits[k] for k in keys]
    else:
        seq = bits
    if isinstance(seq, str):
        text = seq
    else:
        text = "".join(_bit(v) for v in seq)
    mask = Mask(sp_name, text)
    if isinstance(space, MaskSpace):
        mask.check(space)
    return mask


def trainable_param_names(model: nn.Module, mask: "Mask | str") -> set[str]:
    """Names ``apply_mask`` would make trainable (LoRA: head only, before adapters exist)."""
    m = Mask.parse(mask)
    space = get_space(m.space, model)
    m.check(space)
    names = set(space.always_trainable)
    for bit, group in zip(m.bits, space.param_groups):
        if bit == "1":
            names.update(group)
    return names


def apply_mask(
    model: nn.Module,
    mask: "Mask | str",
    *,
    lora_rank: int = 4,
    lora_alpha: float | None = None,
    lora_targets: Iterable[str] = DEFAULT_TARGETS,
) -> int:
    """Set ``requires_grad`` exactly as the mask defines; return the trainable element count.

    Every flag is reset first, so applying masks one after another never leaks state.
    """
    m = Mask.parse(mask, model=model) if isinstance(mask, str) else mask
    if m.space == "lora":
        return apply_lora(model, rank=lora_rank, alpha=lora_alpha, targets=lora_targets)
    names = trainable_param_names(model, m)
    total = 0
    for n, p in model.named_parameters():
        on = n in names
        p.requires_grad_(on)
        total += p.numel() if on else 0
    return total
