"""The demographic groups of a study: the codes of one sensitive attribute, or the product of several
(intersectional groups such as ``F × >=60``), with the cells too small to measure merged into
``other`` or refused (docs/design.md#data-model).

Why one coding, computed once: every metric, the group-balanced sampler, the Fisher and the exported
model must agree on which row is in which group. :func:`group_coding` is a pure function of the
manifest; ``load_dataset`` applies the config's small-group rule on the whole dataset and attaches
the result to it (``PackedDataset.groups``), so a trial given only some splits or rows (validation
fits see no test row, the Fisher a draw of training rows) still uses the groups of the whole dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from fairtune_ray.config import ConfigError
from fairtune_ray.data.manifest import SPLITS, DataError, DatasetInfo

__all__ = ["OTHER", "SEPARATOR", "GroupCoding", "attribute_label", "attribute_list", "coding_for", "group_coding",
           "like_model", "report_small_groups", "small_groups_text", "with_group_column"]

SEPARATOR = " × "   # between the attributes' value names of a product group, and in the display label
OTHER = "other"     # the group small cells are merged into (data.small_groups: merge)

AttributeValue = Union[str, Sequence[str]]


def attribute_list(value: AttributeValue) -> list[str]:
    """``data.sensitive_attribute`` (one name or a list of names) as a list."""
    return [value] if isinstance(value, str) else [str(v) for v in value]


def attribute_label(value: AttributeValue) -> str:
    """The display label of the attribute(s): the name itself for one, ``sex × age_binary`` for several;
    used wherever a string keys the groups (MLflow params, the Fisher cache, titles)."""
    return SEPARATOR.join(attribute_list(value))


@dataclass(frozen=True, eq=False)
class GroupCoding:
    """Which group every manifest row is in. ``codes``: int64, one per row of the manifest it was built
    on; ``names``: {code: name}; ``attribute``: the display label; ``small``: the cells under
    ``min_group_size`` in a split, as (name, {split: rows}), merged into ``other`` (its code is last).
    ``cells`` maps a tuple of the attributes' codes to its group, so :meth:`encode` codes any rows."""

    codes: np.ndarray
    names: dict[int, str]
    attribute: str
    small: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    attributes: tuple[str, ...] = ()
    cells: Mapping[tuple[int, ...], int] = field(default_factory=dict)
    min_group_size: int = 0

    @property
    def other(self) -> Optional[int]:
        """The code of the merged group, or None when nothing was merged."""
        return max(self.names) if self.small else None

    @property
    def cache_key(self) -> str:
        """The label, plus the merged cells when there are: what decides the groups, for cache keys."""
        return self.attribute + (f" (other: {', '.join(n for n, _ in self.small)})" if self.small else "")

    def encode(self, manifest: pd.DataFrame) -> np.ndarray:
        """The group code of each row of ``manifest`` (the whole manifest or any of its rows)."""
        if len(self.attributes) == 1 and not self.small:  # one attribute: its codes, as ever
            return manifest[self.attributes[0]].to_numpy().astype(np.int64)
        return _encode(self.cells, self.attributes, self.attribute, manifest)


def _encode(cells: Mapping[tuple[int, ...], int], attributes: Sequence[str], label: str,
            manifest: pd.DataFrame) -> np.ndarray:
    keys = pd.MultiIndex.from_arrays([manifest[a].to_numpy().astype(np.int64) for a in attributes])
    pos = pd.MultiIndex.from_tuples(list(cells)).get_indexer(keys)
    if (pos < 0).any():
        bad = sorted({tuple(int(c) for c in k) for k, p in zip(keys, pos) if p < 0})
        raise DataError(f"rows whose ({', '.join(attributes)}) codes {bad[:5]} are in no group of '{label}'")
    return np.asarray(list(cells.values()), dtype=np.int64)[pos]


def group_coding(manifest: pd.DataFrame, info: DatasetInfo, attributes: AttributeValue, min_group_size: int = 0,
                 policy: str = "merge") -> GroupCoding:
    """The groups of ``attributes`` on ``manifest`` (pure: the same manifest gives the same coding).

    One attribute: its own codes and names (every code the dataset records). Several: the cells of the
    product present in the manifest, numbered 0..G-1 in the order of the attributes' codes (the first
    attribute varies slowest), named "F × >=60". A cell with fewer than ``min_group_size`` rows in a
    split that has rows (train, val, test) is merged into ``other``, coded last (``policy`` merge), or
    refused with a ConfigError naming it and its counts (``policy`` reject). A row without a code in one
    of the attributes (NaN) is a DataError, as for one attribute when a manifest is loaded:
    ``data prepare`` drops such rows (recorded in dataset.json as ``<attribute>_unknown``).
    """
    attrs = attribute_list(attributes)
    values = _attribute_codes(manifest, info, attrs)
    label = attribute_label(attrs)
    present = sorted({tuple(int(c) for c in row) for row in values.drop_duplicates().itertuples(index=False)})
    if len(attrs) == 1:
        base = {cell: cell[0] for cell in present}
        names = dict(info.attributes[attrs[0]])
    else:
        base = {cell: i for i, cell in enumerate(present)}
        names = {i: SEPARATOR.join(info.attributes[a][c] for a, c in zip(attrs, cell)) for i, cell in enumerate(present)}
    counts = _split_counts(values, manifest["split"] if "split" in manifest.columns else None) if min_group_size else {}
    small = [cell for cell in present if min_group_size and min(counts[cell].values(), default=0) < min_group_size]
    report = [(names[base[cell]], counts[cell]) for cell in small]
    if small and policy == "reject":
        raise ConfigError(small_groups_text(label, report, min_group_size, policy))
    cells = base
    if small:
        cells = _merged(base, names, small, dense=len(attrs) > 1)
        names = _merged_names(base, names, small, cells, dense=len(attrs) > 1)
    codes = values[attrs[0]].to_numpy() if len(attrs) == 1 and not small else _encode(cells, attrs, label, values)
    return GroupCoding(codes, names, label, report, tuple(attrs), cells, min_group_size)


def require_attributes(info: DatasetInfo, columns, attrs: Sequence[str], where: str = "",
                       how_to_choose: str = "config key data.sensitive_attribute") -> None:
    """Each named sensitive attribute is one the dataset records: a code mapping in its info and a
    manifest column. Otherwise a DataError naming the attribute, how to choose one, and those there are."""
    for name in attrs:
        if name not in info.attributes or name not in columns:
            raise DataError(f"{where + ': ' if where else ''}sensitive attribute '{name}' ({how_to_choose}) is not "
                            f"in the manifest; available: {sorted(info.attributes)}")


def _attribute_codes(manifest: pd.DataFrame, info: DatasetInfo, attrs: list[str]) -> pd.DataFrame:
    """The attributes' columns as int64; an unknown attribute, a missing code or an unmapped code is a DataError."""
    if len(set(attrs)) != len(attrs) or not attrs:
        raise DataError(f"data.sensitive_attribute: {attrs} must name one or more different attributes")
    require_attributes(info, manifest.columns, attrs)
    missing = manifest[attrs].isna()
    if missing.to_numpy().any():
        per = {a: int(n) for a, n in missing.sum().items() if n}
        rows = list(manifest.index[missing.any(axis=1).to_numpy()][:5])
        raise DataError(f"rows without a code (NaN) in {per} (e.g. rows {rows}): every row needs a code in each "
                        "sensitive attribute; `fairtune-ray data prepare` drops rows with an unknown value")
    for a in attrs:
        bad = sorted(set(manifest[a].unique()) - set(info.attributes[a]))
        if bad:
            raise DataError(f"column '{a}' has codes {bad} with no recorded mapping {info.attributes[a]}")
    return manifest[attrs].astype(np.int64).reset_index(drop=True)


def _split_counts(values: pd.DataFrame, split: Optional[pd.Series]) -> dict[tuple[int, ...], dict[str, int]]:
    """{cell: {split: rows}} over the splits that have rows (all rows as 'all' without a split column)."""
    split_of = split.to_numpy() if split is not None else np.full(len(values), "all")
    used = [s for s in SPLITS if (split_of == s).any()] if split is not None else ["all"]
    table = values.assign(_split=split_of).groupby([*values.columns, "_split"]).size()
    out: dict[tuple[int, ...], dict[str, int]] = {}
    for cell in {tuple(int(c) for c in k[:-1]) for k in table.index}:
        out[cell] = {s: int(table.get((*cell, s), 0)) for s in used}
    return out


def _merged(base: dict, names: dict, small: list, dense: bool) -> dict[tuple[int, ...], int]:
    """Cells -> codes with the small cells on ``other``: renumbered 0..K-1 then ``other`` for a product,
    the attribute's own codes then max+1 for one attribute."""
    kept = [cell for cell in base if cell not in small]
    if dense:
        cells = {cell: i for i, cell in enumerate(kept)}
        other = len(kept)
    else:
        cells = {cell: base[cell] for cell in kept}
        other = max([*names, *base.values()]) + 1
    cells.update(dict.fromkeys(small, other))
    return dict(sorted(cells.items()))


def _merged_names(base: dict, names: dict, small: list, cells: dict, dense: bool) -> dict[int, str]:
    if dense:
        out = {cells[cell]: names[base[cell]] for cell in base if cell not in small}
    else:
        gone = {base[cell] for cell in small}
        out = {code: name for code, name in names.items() if code not in gone}
    out[cells[small[0]]] = OTHER if OTHER not in out.values() else f"{OTHER} (merged)"
    return out


def small_groups_text(label: str, small: list[tuple[str, dict[str, int]]], min_group_size: int, policy: str) -> str:
    """The preflight message: each small group with its rows per split."""
    shown = "; ".join(f"{name} ({', '.join(f'{s} {n}' for s, n in counts.items())})" for name, counts in small)
    what = f"{len(small)} group(s) of '{label}' with fewer than data.min_group_size={min_group_size} rows in a split"
    if policy == "reject":
        return (f"data.small_groups: reject: {what}: {shown}. Set data.small_groups: merge to pool them into "
                f"'{OTHER}', lower data.min_group_size, or choose other data.sensitive_attribute values")
    return f"{what}, merged into '{OTHER}' (data.small_groups: merge): {shown}"


def report_small_groups(coding: GroupCoding, log: Callable[[str], object]) -> None:
    """Say which groups were merged (nothing when none was)."""
    if coding.small:
        log("warning: " + small_groups_text(coding.attribute, coding.small, coding.min_group_size, "merge"))


def coding_for(attributes: AttributeValue, data) -> GroupCoding:
    """The groups of ``data`` (a PackedDataset) by ``attributes`` (``data.sensitive_attribute``): the coding
    ``load_dataset`` attached to the dataset when it is for the same attributes, else the attributes'
    plain coding of ``data``'s manifest (no small-group rule: a dataset built by hand keeps every group)."""
    attrs = tuple(attribute_list(attributes))
    attached = getattr(data, "groups", None)
    if attached is not None and attached.attributes == attrs:
        return attached
    return group_coding(data.manifest, data.info, list(attrs))


def like_model(manifest: pd.DataFrame, coding: GroupCoding, model_names: Mapping) -> GroupCoding:
    """``coding`` (the plain coding of ``manifest``, e.g. a dataset to evaluate a model on) with the groups an exported model does not
    have pooled into ``other``, when the model merged small groups into it: ``evaluate`` then scores the
    groups the model was selected and tested on. Unchanged when the model has no ``other`` group."""
    known = {str(v) for v in model_names.values()}
    if coding.small or not known & {OTHER, f"{OTHER} (merged)"}:
        return coding
    plain = dict(coding.cells)
    pooled = [cell for cell, code in plain.items() if coding.names[code] not in known]
    if not pooled:
        return coding
    dense = len(coding.attributes) > 1
    cells = _merged(plain, coding.names, pooled, dense)
    names = _merged_names(plain, coding.names, pooled, cells, dense)
    report = [(coding.names[plain[cell]], {}) for cell in pooled]
    codes = _encode(cells, coding.attributes, coding.attribute, manifest)
    return GroupCoding(codes, names, coding.attribute, report, coding.attributes, cells, coding.min_group_size)


def with_group_column(manifest: pd.DataFrame, coding: GroupCoding) -> pd.DataFrame:
    """``manifest`` with the group codes in a column named by the coding's label (for per-column checks)."""
    return manifest.assign(**{coding.attribute: coding.encode(manifest)})
