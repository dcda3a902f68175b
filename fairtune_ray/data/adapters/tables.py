"""Finding and reading a dataset's metadata files for adapters.

Users point ``--root`` at the folder they downloaded, which may be the dataset folder itself or
its parent, so files are searched a couple of levels down. Every failure raises
:class:`DataError` naming the dataset, the file and what was expected.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import pandas as pd

from fairtune_ray.data.manifest import DataError


def _excel_readable() -> bool:
    """openpyxl (optional) is installed, so .xlsx metadata can be read directly."""
    return importlib.util.find_spec("openpyxl") is not None


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


def _matches_in_first_folder(root: Path, wanted: list[str], depth: int) -> list[tuple[int, Path]]:
    """(rank in ``wanted``, path) of the wanted names in the first searched folder holding any."""
    found: list[tuple[int, Path]] = []
    for d in search_dirs(root, depth):
        try:
            names = {e.name.lower(): Path(e.path) for e in os.scandir(d) if e.is_file()}
        except OSError:
            continue
        found = [(rank, names[w]) for rank, w in enumerate(wanted) if w in names]
        if found:
            break
    return found


def find_file(root: Path, candidates: Sequence[str], *, dataset: str, what: str,
              depth: int = 2, required: bool = True) -> Optional[Path]:
    """The first of ``candidates`` (file names, case-insensitive) under ``root``.

    When several formats are listed (e.g. xlsx and a CSV export), a readable one wins.
    """
    if not root.is_dir():
        raise DataError(f"{dataset}: dataset root '{root}' is not a folder")
    found = _matches_in_first_folder(root, [c.lower() for c in candidates], depth)
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


def find_dir(root: Path, names: Sequence[str], *, default: Path, depth: int = 2) -> Path:
    """The first folder called one of ``names`` (case-insensitive) under ``root``, else ``default``."""
    wanted = {n.lower() for n in names}
    for d in search_dirs(root, depth):
        if d.name.lower() in wanted and d != root:
            return d
    return default


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
