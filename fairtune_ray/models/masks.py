"""FairTune-style binary masks over parameter groups (docs/design.md#mask-spaces).

A *mask* is a space name plus a 0/1 string (see ``fairtune_ray.models.spaces`` for the spaces);
``apply_mask`` turns it into ``requires_grad`` flags. The classification head is always
trainable; patch embedding, cls token, pos embed and the final norm stay frozen unless a space
says otherwise. Fixed baselines (full, linear, bitfit, attn_only, norm_only, and the PEFT methods
lora, dora, ia3, loha) are masks without bits, serialised by their names, so every trial logs a mask
the same way. With a PEFT method the mask decides where its adapters go (``models/adapters.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from torch import nn

from fairtune_ray.models.adapters import AdapterSpec, has_adapters, insert_adapters, peft_method_names
from fairtune_ray.models.param_groups import MaskSpaceError
from fairtune_ray.models.spaces import MaskSpace, get_space, is_baseline, list_spaces, space_spec


@dataclass(frozen=True)
class Mask:
    """A space name plus a 0/1 string; baselines have no bits. ``str()`` is the logged form."""

    space: str
    bits: str = ""

    def __post_init__(self) -> None:
        if is_baseline(self.space):
            if self.bits:
                raise MaskSpaceError(f"baseline mask {self.space!r} takes no bits, got {self.bits!r}")
            return
        if space_spec(self.space) is None:
            raise MaskSpaceError(f"unknown mask space {self.space!r}; known: {list_spaces(True)}")
        if not self.bits or set(self.bits) - {"0", "1"}:
            raise MaskSpaceError(
                f"mask bits for space {self.space!r} must be a non-empty string of '0'/'1', got {self.bits!r}"
            )

    def __str__(self) -> str:
        return self.space if self.is_baseline else f"{self.space}:{self.bits}"

    @property
    def is_baseline(self) -> bool:
        return is_baseline(self.space)

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
        searched = space_spec(space) is not None and not is_baseline(space)
        if not sep and searched:
            raise MaskSpaceError(f"mask {t!r}: space {space!r} needs bits, e.g. '{space}:0101...'")
        if model is not None and space_spec(space) is not None:
            n = get_space(space, model).n_bits  # also raises if the space does not fit
            bad = "".join(sorted(set(bits) - {"0", "1"}))
            if searched and (len(bits) != n or bad):
                raise MaskSpaceError(
                    f"mask {t!r}: space {space!r} on {type(model).__name__} expects {n} bits of '0'/'1', "
                    f"got {len(bits)} characters" + (f" including {bad!r}" if bad else "")
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
    """Names ``apply_mask`` would make trainable; with a PEFT method (a PEFT baseline is one), the
    parameters whose linears get adapters (before the adapters exist), plus the head."""
    m = Mask.parse(mask)
    space = get_space(m.space, model)
    m.check(space)
    names = set(space.always_trainable)
    for bit, group in zip(m.bits, space.param_groups):
        if bit == "1":
            names.update(group)
    return names


def mask_adapters(mask: "Mask | str", adapters: Optional[AdapterSpec] = None) -> Optional[AdapterSpec]:
    """The PEFT method a mask trains with: ``adapters`` if given, else the PEFT baseline's own method
    at its defaults (mask ``lora``), else None (the mask's groups train their own weights)."""
    space = mask.space if isinstance(mask, Mask) else str(mask).partition(":")[0].strip()
    if adapters is None and space in peft_method_names():
        return AdapterSpec(space)
    return adapters


def apply_mask(model: nn.Module, mask: "Mask | str", *, adapters: Optional[AdapterSpec] = None) -> int:
    """Set ``requires_grad`` exactly as the mask defines; return the trainable element count.

    With ``adapters`` (or a PEFT baseline mask) the method's adapters go into the chosen linears of
    the groups that are on, and only they and the head train. Every flag is reset first, so applying
    masks one after another never leaks state (adapters, once inserted, cannot be applied again).
    """
    if has_adapters(model):  # their layers renamed the base weights the spaces are built from
        raise ValueError("the model already has PEFT adapters; build a fresh backbone to apply another mask")
    m = Mask.parse(mask, model=model) if isinstance(mask, str) else mask
    names = trainable_param_names(model, m)
    adapters = mask_adapters(m, adapters)
    if adapters is not None:
        insert_adapters(model, names, adapters)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = 0
    for n, p in model.named_parameters():
        on = n in names
        p.requires_grad_(on)
        total += p.numel() if on else 0
    return total
