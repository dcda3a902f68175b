"""Patient-level splits that keep every group measurable, and the checks that say when one is not.

Why: a group's AUC needs both classes. An unstratified patient split can leave a small group
with only negatives in validation or test, and that AUC stays undefined for a whole search;
an empty test split is found only after the search. :func:`assign_splits` with ``stratify``
splits patients by group x label cell; :func:`split_coverage_problems` finds what is left
unmeasurable, so that ``data prepare`` and the search preflight fail before any work.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from fairtune_ray.data.manifest import SPLITS, DataError, DatasetInfo

__all__ = ["assign_splits", "check_split_coverage", "empty_split_problems", "group_problems", "missing_units",
           "split_coverage_problems"]

# What str() makes of a missing value: an id that was stringified early is still missing.
_MISSING_TEXT = frozenset({"", "nan", "none", "<na>", "nat"})


def missing_units(values: pd.Series) -> pd.Series:
    """True where a split unit id is missing: NaN, None, an empty string or the text of a missing value."""
    text = values.astype(str).str.strip().str.lower()
    return values.isna() | text.isin(_MISSING_TEXT)


def _row_examples(df: pd.DataFrame, mask: pd.Series, k: int = 5) -> str:
    """The first ``k`` flagged rows by index, and by sample_id / image when the table has them."""
    rows = df.index[mask.to_numpy()]
    shown = f"rows {list(rows[:k])}"
    for col in ("sample_id", "image"):
        if col in df.columns:
            shown += f", {col} {[str(v) for v in df.loc[mask.to_numpy(), col].head(k)]}"
    return shown + (" ..." if len(rows) > k else "")


def assign_splits(
    df: pd.DataFrame,
    unit_column: str = "patient_id",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: Optional[Sequence[str]] = None,
    drop_missing: bool = False,
) -> pd.Series:
    """Seeded split by patient (or lesion): every row of one unit lands in the same split.

    ``stratify=None``: units are shuffled and cut by ``fractions`` (the embedded synthetic data's
    split; its output must not change). ``stratify=[columns]`` (e.g. the sensitive attributes and
    ``"label"``): units are split within each cell of those columns, see :func:`_stratified_units`;
    a unit with several rows takes the cell most of its rows are in (on a tie, its first row's).

    A row without a unit id is a DataError naming the rows; with ``drop_missing`` its split is
    NaN instead (the caller drops those rows). Returns a Series named ``split`` on ``df``'s index.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or len(fractions) != 3:
        raise DataError(f"split fractions must be three numbers summing to 1, got {list(fractions)}")
    for col in [unit_column, *(stratify or [])]:
        if col not in df.columns:
            raise DataError(f"column '{col}' is needed for the patient-level split")
    missing = missing_units(df[unit_column])
    if missing.any() and not drop_missing:
        raise DataError(f"{int(missing.sum())} of {len(df)} row(s) have no '{unit_column}' ({_row_examples(df, missing)}): "
                        "the split cannot keep their patient together (drop those rows or fill the column)")
    kept = df[~missing.to_numpy()]
    units = kept[unit_column].astype(str)
    if stratify:
        mapping = _stratified_units(units, kept[list(stratify)], fractions, seed)
    else:
        mapping = _shuffled_units(units, fractions, seed)
    split = units.map(mapping).rename("split")
    if not missing.any():
        return split
    out = pd.Series(np.nan, index=df.index, dtype=split.dtype, name="split")
    out.iloc[np.flatnonzero(~missing.to_numpy())] = split.to_numpy()
    return out


def _shuffled_units(units: pd.Series, fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Unstratified: sorted units, one seeded shuffle, cut at the rounded fractions."""
    order = np.asarray(sorted(units.unique()))
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    n = len(order)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return {u: "train" if i < n_train else ("val" if i < n_train + n_val else "test") for i, u in enumerate(order)}


def _unit_cells(units: pd.Series, strata: pd.DataFrame) -> pd.Series:
    """Each unit's cell: the cell most of its rows are in; on a tie, the cell of its first row."""
    cell = strata.iloc[:, 0].astype(str)
    for col in strata.columns[1:]:
        cell = cell + "\x1f" + strata[col].astype(str)
    rows = pd.DataFrame({"unit": units.to_numpy(), "cell": cell.to_numpy(), "order": np.arange(len(units))})
    counts = rows.groupby(["unit", "cell"], sort=False).agg(n=("order", "size"), first=("order", "min")).reset_index()
    counts = counts.sort_values(["unit", "n", "first"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("unit").set_index("unit")["cell"]


def _largest_remainder(quota: np.ndarray) -> np.ndarray:
    """Whole numbers summing to round(quota.sum()), each the floor of its quota or one more."""
    base = np.floor(quota + 1e-9).astype(int)
    extra = round(float(quota.sum())) - int(base.sum())
    order = np.argsort(-(quota - base), kind="stable")
    base[order[:extra]] += 1
    return base


def _cell_floors(n: int, fractions: np.ndarray) -> np.ndarray:
    """Per split, the floor of the cell's share; a cell with a unit for every used split gets one in each."""
    base = np.floor(fractions * n + 1e-9).astype(int)
    used = fractions > 0
    if n >= used.sum():
        base[used & (base == 0)] = 1
        while base.sum() > n:                   # the guarantee is taken from the largest split
            base[np.argmax(base)] -= 1
    return base


def _stratified_units(units: pd.Series, strata: pd.DataFrame, fractions: Sequence[float],
                      seed: int) -> dict[str, str]:
    """Stratified by cell: within each cell (sorted, units shuffled with one seeded generator) every
    split gets the floor of its share, and at least one unit when the cell has a unit for each split
    with a non-zero fraction (3 for train/val/test). The units left over are handed out by largest
    remainder across all cells so that the split sizes are the fractions of all units, rounded;
    ties fall by the seeded generator.

    Not sklearn's ``train_test_split(stratify=...)``: it refuses a cell with one unit and does not
    promise a unit of every cell to validation and test; ``StratifiedGroupKFold`` cuts k equal folds.
    """
    frac = np.asarray(fractions, dtype=float)
    cell_of = _unit_cells(units, strata)
    if cell_of.empty:
        return {}
    rng = np.random.default_rng(seed)
    members = []
    for _, us in sorted(cell_of.groupby(cell_of, sort=False).groups.items()):
        us = np.asarray(sorted(us))
        rng.shuffle(us)
        members.append(us)
    sizes = np.array([len(m) for m in members])
    take = np.stack([_cell_floors(n, frac) for n in sizes])           # cells x splits
    left = sizes - take.sum(axis=1)
    deficit = _largest_remainder(frac * sizes.sum()) - take.sum(axis=0)
    remainder = frac[None, :] * sizes[:, None] - take
    ties = rng.random(remainder.shape)
    for i in np.lexsort((ties.ravel(), -remainder.ravel())):
        c, s = divmod(int(i), len(frac))
        if left[c] > 0 and deficit[s] > 0 and remainder[c, s] > 0:
            take[c, s] += 1
            left[c] -= 1
            deficit[s] -= 1
    for c in np.flatnonzero(left):              # only when the guarantees overshot a split's size
        s = int(np.argmax(np.where(frac > 0, remainder[c], -np.inf)))
        take[c, s] += left[c]
    mapping = {}
    for us, counts in zip(members, take):
        for name, lo, hi in zip(SPLITS, np.cumsum(counts) - counts, np.cumsum(counts)):
            mapping.update(dict.fromkeys(us[lo:hi], name))
    return mapping


# --------------------------------------------------------------------------------------------
# coverage


def _counts(part: pd.DataFrame, label_col: str) -> str:
    n, pos = len(part), int((part[label_col] == 1).sum())
    return f"{n} rows, {pos} positives, {int((part[label_col] == 0).sum())} negatives"


def empty_split_problems(manifest: pd.DataFrame, label_col: str = "label") -> list[str]:
    """One message per empty train, val or test split."""
    return [f"split '{split}' is empty (0 rows; the whole manifest has {_counts(manifest, label_col)})"
            for split in SPLITS if not (manifest["split"] == split).any()]


def group_problems(manifest: pd.DataFrame, attribute: str, split: str, label_col: str = "label",
                   mapping: Optional[Mapping[int, str]] = None) -> list[str]:
    """The groups of ``attribute`` (those present anywhere in the manifest) that ``split`` has no
    rows of, or rows of one class only; each message names the split, the group and its counts."""
    part = manifest[manifest["split"] == split]
    problems = []
    for code in sorted(manifest[attribute].dropna().unique()):
        rows = part[part[attribute] == code]
        name = f"{attribute}={code}" + (f" ({mapping.get(int(code), '?')})" if mapping is not None else "")
        pos, neg = int((rows[label_col] == 1).sum()), int((rows[label_col] == 0).sum())
        if rows.empty:
            problems.append(f"split '{split}' has no rows of group {name} ({_counts(rows, label_col)}): "
                            "it cannot be measured there")
        elif pos == 0 or neg == 0:
            problems.append(f"split '{split}' group {name} has only {'negative' if pos == 0 else 'positive'} "
                            f"labels ({_counts(rows, label_col)}): its AUC will be undefined")
    return problems


def split_coverage_problems(manifest: pd.DataFrame, attribute: str, label_col: str = "label",
                            mapping: Optional[Mapping[int, str]] = None) -> list[str]:
    """What leaves a group of ``attribute`` unmeasurable, one message each: an empty train, val or
    test split; a group with no rows in val or test; a group lacking a class in val or test."""
    problems = empty_split_problems(manifest, label_col)
    for split in SPLITS[1:]:
        if (manifest["split"] == split).any():
            problems += group_problems(manifest, attribute, split, label_col, mapping)
    return problems


def check_split_coverage(manifest: pd.DataFrame, info_or_mapping: Union[DatasetInfo, Mapping[int, str], None],
                         attribute: str, where: str, hint: str = "") -> None:
    """Raise a DataError that lists every :func:`split_coverage_problems` finding."""
    mapping = info_or_mapping.attributes.get(attribute) if isinstance(info_or_mapping, DatasetInfo) else info_or_mapping
    problems = split_coverage_problems(manifest, attribute, mapping=mapping)
    if problems:
        raise DataError(f"{where}: the split leaves groups of '{attribute}' unmeasurable: " + "; ".join(problems)
                        + (f". {hint}" if hint else ""))
