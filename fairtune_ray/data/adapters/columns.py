"""Coding a dataset's columns into manifest codes: attributes, ages, and split columns.

A value the dataset uses for "not recorded" makes a row's attribute unknown (``NaN``: the row is
dropped later, and counted); any other unexpected value is a :class:`DataError` that lists the
values, the file and the column, so a user with a slightly different copy sees what to fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from fairtune_ray.data.manifest import DataError
from fairtune_ray.data.splits import assign_splits

SEX: dict[int, str] = {0: "M", 1: "F"}
AGE_BINARY: dict[int, str] = {0: "<60", 1: ">=60"}
AGE_5: dict[int, str] = {0: "0-20", 1: "20-40", 2: "40-60", 3: "60-80", 4: "80+"}
AGE_ATTRIBUTES: dict[str, dict[int, str]] = {"age_binary": AGE_BINARY, "age_5": AGE_5}

# Values that datasets use to say "not recorded": they make a row's attribute missing, not invalid.
MISSING_MARKERS = frozenset({"", "unknown", "unk", "nan", "none", "null", "n/a", "na", "-1",
                             "not recorded", "not available", "unable to obtain",
                             "patient declined to answer", "patient refused", "declined", "refused"})

UNEXPECTED = object()
"""What a ``map_with`` classifier returns for a value it does not know (an error)."""


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(value)
    return value


def is_missing(value: Any) -> bool:
    """None, NaN, or one of the :data:`MISSING_MARKERS`."""
    if value is None:
        return True
    try:
        if pd.isna(value):
            return True
    except (TypeError, ValueError):
        pass
    return isinstance(value, str) and value.strip().lower() in MISSING_MARKERS


def map_values(series: pd.Series, mapping: Mapping[Any, Optional[int]], *, dataset: str,
               path: Path | str, column: str, missing_ok: bool = True) -> pd.Series:
    """Code a column through ``mapping`` (keys compared case-insensitively, 1.0 == 1).

    A key mapped to ``None`` and the usual "unknown" markers give ``NaN`` (the row is dropped
    later, and counted); any other value is an error that lists the unexpected values.
    """
    table = {_norm(k): v for k, v in mapping.items()}
    codes: dict[Any, float] = {}
    unexpected = []
    for raw in pd.unique(series.dropna()):
        key = _norm(raw)
        if key in table:
            codes[raw] = np.nan if table[key] is None else float(table[key])
        elif missing_ok and is_missing(raw):
            codes[raw] = np.nan
        else:
            unexpected.append(raw)
    if unexpected:
        shown = sorted(map(str, unexpected))[:12]
        expected = sorted(str(k) for k in mapping)
        raise DataError(f"{dataset}: '{path}' column '{column}' has unexpected value(s) {shown}"
                        f"{' ...' if len(unexpected) > 12 else ''}; expected one of {expected}")
    return series.map(codes).astype(float)


def map_with(series: pd.Series, classify: Callable[[str], Any], *, dataset: str, path: Path | str,
             column: str, expected: str) -> pd.Series:
    """Code free-text values (e.g. race) with ``classify(lower-case text)`` -> code, None (unknown)
    or ``UNEXPECTED``; unexpected values are an error that lists them."""
    codes: dict[Any, float] = {}
    unexpected = []
    for raw in pd.unique(series.dropna()):
        if is_missing(raw):
            codes[raw] = np.nan
            continue
        code = classify(str(raw).strip().lower())
        if code is UNEXPECTED:
            unexpected.append(raw)
        else:
            codes[raw] = np.nan if code is None else float(code)
    if unexpected:
        raise DataError(f"{dataset}: '{path}' column '{column}' has unexpected value(s) "
                        f"{sorted(map(str, unexpected))[:12]}; expected {expected}")
    return series.map(codes).astype(float)


def numeric_age(series: pd.Series, *, dataset: str, path: Path | str, column: str) -> pd.Series:
    """Ages as floats (NaN where unknown); text or impossible ages are an error."""
    num = pd.to_numeric(series, errors="coerce")
    bad_text = [v for v in pd.unique(series[num.isna() & series.notna()]) if not is_missing(v)]
    if bad_text:
        raise DataError(f"{dataset}: '{path}' column '{column}' has non-numeric age value(s) "
                        f"{sorted(map(str, bad_text))[:12]}")
    bad_range = sorted(set(num[(num < 0) | (num > 120)].tolist()))
    if bad_range:
        raise DataError(f"{dataset}: '{path}' column '{column}' has age value(s) outside 0-120: {bad_range[:12]}")
    return num.astype(float)


def age_binary(age: pd.Series) -> pd.Series:
    return pd.Series(np.where(age.isna(), np.nan, (age >= 60).astype(float)), index=age.index)


def age_5(age: pd.Series) -> pd.Series:
    band = np.clip(np.floor(age.to_numpy(dtype=float) / 20.0), 0, 4)
    return pd.Series(band, index=age.index)


def add_age_columns(table: pd.DataFrame, age: pd.Series, wanted: Iterable[str]) -> None:
    """Fill the requested age attributes (age_binary, age_5) from numeric ages."""
    wanted = set(wanted)
    if "age_binary" in wanted:
        table["age_binary"] = age_binary(age).to_numpy()
    if "age_5" in wanted:
        table["age_5"] = age_5(age).to_numpy()


def split_official_and_random(table: pd.DataFrame, official: pd.Series, fractions: Sequence[float],
                              seed: int, stratify: Optional[Sequence[str]] = None) -> pd.Series:
    """Keep the rows whose official split is set; split the rest train/val by patient, in the
    ratio of the train and val fractions (for datasets that ship only a held-out test set),
    stratified by the ``stratify`` columns (e.g. attributes and label) so val keeps both classes
    of every group where it can."""
    split = official.copy().astype(object)
    rest = split.isna()
    if rest.any():
        tr, va = float(fractions[0]), float(fractions[1])
        total = tr + va if tr + va > 0 else 1.0
        part = assign_splits(table.loc[rest], "patient_id", (tr / total, va / total, 0.0), seed, stratify=stratify)
        split.loc[rest] = part.replace({"test": "train"}).to_numpy()
    return split
