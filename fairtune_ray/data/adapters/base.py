"""The adapter contract: the :class:`Adapter` base class, its options, context and result.

An adapter reads one public dataset's own metadata files (with their published names and
columns) and returns a table with one row per image: ``image`` (path relative to ``--root``),
optionally ``image_key`` (a member inside a container file such as an ``.h5``), ``label`` (0/1),
``patient_id``, one integer column per sensitive attribute (``NaN`` where the dataset records
the value as unknown) and optionally ``split`` (when the dataset ships an official split).
``disease_label`` says which label value is the disease (0 where label 1 is "no finding"); it is
recorded in dataset.json so the underdiagnosis metrics count the right error.
``fairtune_ray.data.prepare`` does the rest: attribute selection, splits, validation, decoding.
Shared helpers live next to this module: ``tables`` (finding and reading metadata files) and
``columns`` (coding values into attribute codes); ``registry`` holds ``@register_adapter``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional

import numpy as np
import pandas as pd

from fairtune_ray.data.adapters.readers import read_pil
from fairtune_ray.data.manifest import DataError


class DataWarning(UserWarning):
    """A dataset problem that does not stop preparation (e.g. a group lacking one class)."""


def warn(message: str) -> None:
    warnings.warn(message, DataWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# options, context and result


def parse_bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    s = str(text).strip().lower()
    if s in ("1", "true", "yes", "y", "on"):
        return True
    if s in ("0", "false", "no", "n", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


@dataclass(frozen=True)
class Option:
    """An adapter-specific setting, given on the command line as ``--option name=value``."""

    default: Any
    help: str
    type: Callable[[Any], Any] = str


@dataclass
class AdapterContext:
    """What the user asked for: where the dataset is and how to read it."""

    root: Path
    attributes: Optional[list[str]] = None   # None: the adapter's defaults
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def rel(self, path: str | os.PathLike) -> str:
        """A path relative to the dataset root, as stored in the manifest."""
        return os.path.relpath(os.fspath(path), self.root)


@dataclass
class AdapterResult:
    """An adapter's output, before splits, image checks and decoding."""

    table: pd.DataFrame
    attributes: dict[str, dict[int, str]]
    label_names: dict[int, str]
    reader: Callable[..., Any] = read_pil
    split_policy: str = "random"            # "official" when the table carries a split column
    extra: dict = field(default_factory=dict)
    disease_label: Optional[int] = None     # None: the adapter's class-level ``disease_label``


class DropLog:
    """Rows removed on purpose (unknown attribute, uncertain label...), recorded in dataset.json."""

    def __init__(self) -> None:
        self.records: dict[str, dict] = {}

    def drop(self, df: pd.DataFrame, mask: pd.Series | np.ndarray, reason: str,
             example_column: str = "image") -> pd.DataFrame:
        mask = np.asarray(mask, dtype=bool)
        n = int(mask.sum())
        if n:
            rec = self.records.setdefault(reason, {"count": 0, "examples": []})
            rec["count"] += n
            if example_column in df.columns:
                room = 5 - len(rec["examples"])
                rec["examples"] += [str(x) for x in df.loc[mask, example_column].head(max(room, 0))]
        return df.loc[~mask].reset_index(drop=True)


class Adapter:
    """Base class: subclasses set the class attributes and implement :meth:`load`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    source_url: ClassVar[str] = ""
    unit: ClassVar[str] = "patient"            # what one patient_id stands for (patient, lesion, image)
    label_names: ClassVar[dict[int, str]] = {0: "negative", 1: "positive"}
    disease_label: ClassVar[int] = 1           # the label value that means the disease (0: label 1 is healthy)
    attributes: ClassVar[dict[str, dict[int, str]]] = {}
    default_attributes: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[dict[str, Option]] = {}

    def resolve_options(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with the user's ``--option`` values, typed; unknown names are errors."""
        out = {k: o.default for k, o in self.options.items()}
        for key, value in (raw or {}).items():
            if key not in self.options:
                known = ", ".join(sorted(self.options)) or "none"
                raise DataError(f"{self.name}: unknown option '{key}' (options of this adapter: {known})")
            if value is None:
                continue
            try:
                out[key] = self.options[key].type(value)
            except (TypeError, ValueError) as err:
                raise DataError(f"{self.name}: option '{key}': {err}") from None
        return out

    def disease_label_of(self, result: AdapterResult) -> int:
        """The disease label to record: the result's when it sets one (a per-run option), else the class's."""
        return self.disease_label if result.disease_label is None else result.disease_label

    def requested_attributes(self, ctx: AdapterContext) -> list[str]:
        """The attributes to produce; names not offered by this dataset are an error."""
        if ctx.attributes is None:
            return list(self.default_attributes)
        bad = [a for a in ctx.attributes if a not in self.attributes]
        if bad:
            raise DataError(f"{self.name}: unknown sensitive attribute(s) {bad}; "
                            f"this dataset offers {sorted(self.attributes)}")
        return list(dict.fromkeys(ctx.attributes))

    def load(self, ctx: AdapterContext) -> AdapterResult:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def describe(cls) -> str:
        first = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else cls.title
        return first
