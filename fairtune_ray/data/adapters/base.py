"""Shared machinery for dataset adapters.

An adapter reads one public dataset's own metadata files (with their published names and
columns) and returns a table with one row per image: ``image`` (path relative to ``--root``),
optionally ``image_key`` (a member inside a container file such as an ``.h5``), ``label`` (0/1),
``patient_id``, one integer column per sensitive attribute (``NaN`` where the dataset records
the value as unknown) and optionally ``split`` (when the dataset ships an official split).
``fairtune_ray.data.prepare`` does the rest: attribute selection, splits, validation, decoding.

Every check raises :class:`DataError` with the dataset, file, column and offending values in
the message, so a user with a slightly different copy of a dataset sees what to fix.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from fairtune_ray.data.adapters.readers import read_pil
from fairtune_ray.data.manifest import DataError

SEX: dict[int, str] = {0: "M", 1: "F"}
AGE_BINARY: dict[int, str] = {0: "<60", 1: ">=60"}
AGE_5: dict[int, str] = {0: "0-20", 1: "20-40", 2: "40-60", 3: "60-80", 4: "80+"}
AGE_ATTRIBUTES: dict[str, dict[int, str]] = {"age_binary": AGE_BINARY, "age_5": AGE_5}

# Values that datasets use to say "not recorded": they make a row's attribute missing, not invalid.
MISSING_MARKERS = frozenset({"", "unknown", "unk", "nan", "none", "null", "n/a", "na", "-1",
                             "not recorded", "not available", "unable to obtain",
                             "patient declined to answer", "patient refused", "declined", "refused"})


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


# --------------------------------------------------------------------------------------------
# finding and reading metadata files


def _excel_readable() -> bool:
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        return False
    return True


def _children(d: Path, limit: int = 400) -> list[Path]:
    try:
        entries = sorted(os.scandir(d), key=lambda e: e.name)
    except OSError:
        return []
    if len(entries) > limit:      # an image folder (e.g. CheXpert's train/): not worth descending
        return []
    return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]


def search_dirs(root: Path, depth: int = 2) -> list[Path]:
    """root, then its sub-folders, then theirs (skipping huge image folders), breadth first."""
    out, level = [root], [root]
    for _ in range(depth):
        level = [c for d in level for c in _children(d)]
        out += level
    return out


def find_file(root: Path, candidates: Sequence[str], *, dataset: str, what: str,
              depth: int = 2, required: bool = True) -> Optional[Path]:
    """The first of ``candidates`` (file names, case-insensitive) under ``root``.

    Users point ``--root`` at the folder they downloaded; it may be the dataset folder itself or
    its parent, so a couple of levels are searched. When several formats are listed (e.g. xlsx
    and a CSV export), a readable one wins.
    """
    if not root.is_dir():
        raise DataError(f"{dataset}: dataset root '{root}' is not a folder")
    wanted = [c.lower() for c in candidates]
    found: list[tuple[int, Path]] = []
    for d in search_dirs(root, depth):
        try:
            names = {e.name.lower(): Path(e.path) for e in os.scandir(d) if e.is_file()}
        except OSError:
            continue
        for rank, w in enumerate(wanted):
            if w in names:
                found.append((rank, names[w]))
        if found:
            break
    if not found:
        if not required:
            return None
        others = f" (or {', '.join(repr(c) for c in candidates[1:])})" if len(candidates) > 1 else ""
        raise DataError(f"{dataset}: {what} '{candidates[0]}'{others} not found under '{root}'")
    found.sort()
    if not _excel_readable():
        readable = [p for _, p in found if p.suffix.lower() not in (".xlsx", ".xls")]
        if readable:
            return readable[0]
    return found[0][1]


def read_table(path: Path, *, dataset: str, **kwargs: Any) -> pd.DataFrame:
    """A metadata table (CSV, CSV.gz, TSV, Parquet or Excel) as a DataFrame."""
    name = path.name.lower()
    try:
        if name.endswith((".xlsx", ".xls")):
            if not _excel_readable():
                raise DataError(
                    f"{dataset}: reading '{path}' needs the 'openpyxl' package, which is not installed. "
                    f"Install it, or export the sheet to CSV with the same columns as "
                    f"'{path.with_suffix('.csv').name}' in the same folder")
            return pd.read_excel(path, **kwargs)
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        sep = "\t" if name.endswith((".tab", ".tsv", ".tab.gz", ".tsv.gz")) else ","
        df = pd.read_csv(path, sep=sep, low_memory=False, **kwargs)
        if df.shape[1] == 1 and "\t" in str(df.columns[0]):
            df = pd.read_csv(path, sep="\t", low_memory=False, **kwargs)
        return df
    except DataError:
        raise
    except Exception as err:  # parser errors, bad gzip, ...
        raise DataError(f"{dataset}: cannot read metadata file '{path}': {type(err).__name__}: {err}") from None


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path | str, *, dataset: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{dataset}: '{path}' lacks column(s) {missing} "
                        f"(its columns: {list(map(str, df.columns))[:30]})")


def index_files(root: Path, extensions: Iterable[str], under: Optional[Sequence[Path]] = None) -> dict[str, Path]:
    """File stem -> path for every file with one of ``extensions`` below ``root`` (first wins)."""
    exts = tuple(e.lower() for e in extensions)
    index: dict[str, Path] = {}
    for top in (under or [root]):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for f in sorted(filenames):
                if f.lower().endswith(exts):
                    index.setdefault(f.rsplit(".", 1)[0], Path(dirpath) / f)
    return index


# --------------------------------------------------------------------------------------------
# coding values


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


def _is_missing(value: Any) -> bool:
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
        elif missing_ok and _is_missing(raw):
            codes[raw] = np.nan
        else:
            unexpected.append(raw)
    if unexpected:
        shown = sorted(map(str, unexpected))[:12]
        expected = sorted(str(k) for k in mapping)
        raise DataError(f"{dataset}: '{path}' column '{column}' has unexpected value(s) {shown}"
                        f"{' ...' if len(unexpected) > 12 else ''}; expected one of {expected}")
    return series.map(codes).astype(float)


def numeric_age(series: pd.Series, *, dataset: str, path: Path | str, column: str) -> pd.Series:
    """Ages as floats (NaN where unknown); text or impossible ages are an error."""
    num = pd.to_numeric(series, errors="coerce")
    bad_text = [v for v in pd.unique(series[num.isna() & series.notna()]) if not _is_missing(v)]
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


def find_dir(root: Path, names: Sequence[str], *, default: Path, depth: int = 2) -> Path:
    """The first folder called one of ``names`` (case-insensitive) under ``root``, else ``default``."""
    wanted = {n.lower() for n in names}
    for d in search_dirs(root, depth):
        if d.name.lower() in wanted and d != root:
            return d
    return default


_UNEXPECTED = object()


def map_with(series: pd.Series, classify: Callable[[str], Any], *, dataset: str, path: Path | str,
             column: str, expected: str) -> pd.Series:
    """Code free-text values (e.g. race) with ``classify(lower-case text)`` -> code, None (unknown)
    or ``UNEXPECTED``; unexpected values are an error that lists them."""
    codes: dict[Any, float] = {}
    unexpected = []
    for raw in pd.unique(series.dropna()):
        if _is_missing(raw):
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


UNEXPECTED = _UNEXPECTED


def split_official_and_random(table: pd.DataFrame, official: pd.Series, fractions: Sequence[float],
                              seed: int) -> pd.Series:
    """Keep the rows whose official split is set; split the rest train/val by patient, in the
    ratio of the train and val fractions (for datasets that ship only a held-out test set)."""
    from fairtune_ray.data.manifest import assign_splits

    split = official.copy().astype(object)
    rest = split.isna()
    if rest.any():
        tr, va = float(fractions[0]), float(fractions[1])
        total = tr + va if tr + va > 0 else 1.0
        part = assign_splits(table.loc[rest], "patient_id", (tr / total, va / total, 0.0), seed)
        split.loc[rest] = part.replace({"test": "train"}).to_numpy()
    return split


is_missing = _is_missing
