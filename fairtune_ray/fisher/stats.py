"""Per-group, per-layer Fisher statistics: a table (Parquet) and a disparity plot.

Why: the statistics are logged per search (MLflow artifact) so that one can see which layers are
group-specific, which is what the mask-search prior (``prior.py``) acts on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from torch import Tensor

from .neutralise import neutralised_importance, normalise

__all__ = ["fisher_statistics", "save_fisher_parquet", "plot_disparity", "layer_disparity", "STAT_COLUMNS"]

STAT_COLUMNS: list[str] = [
    "group",
    "param",
    "layer",
    "numel",
    "mean_fisher",
    "mean_normalised_fisher",
    "disparity_mean",
    "disparity_max",
    "importance_mean",
]


def layer_disparity(D: Mapping[str, Tensor]) -> dict[str, float]:
    """Mean disparity per parameter tensor."""
    return {n: float(d.double().mean()) if d.numel() else 0.0 for n, d in D.items()}


def fisher_statistics(
    fisher_by_group: Mapping[int, Mapping[str, Tensor]],
    group_names: Mapping[int, str],
    gamma: float = 0.0,
) -> pd.DataFrame:
    """One row per (group, parameter tensor), columns ``STAT_COLUMNS``.

    ``disparity_*`` and ``importance_mean`` (of I' at ``gamma``) are properties of the tensor,
    repeated on every group's row; ``layer`` is the module path (parameter name without its
    last component). A group missing from ``group_names`` is named by its code.
    """
    I, D = neutralised_importance(fisher_by_group, gamma=gamma)
    d_mean = layer_disparity(D)
    rows: list[dict] = []
    for g, F in fisher_by_group.items():
        Fn = normalise(F)
        for name, t in F.items():
            rows.append(
                {
                    "group": str(group_names.get(g, g)),
                    "param": name,
                    "layer": name.rpartition(".")[0] or name,
                    "numel": int(t.numel()),
                    "mean_fisher": float(t.double().mean()),
                    "mean_normalised_fisher": float(Fn[name].double().mean()),
                    "disparity_mean": d_mean[name],
                    "disparity_max": float(D[name].max()) if D[name].numel() else 0.0,
                    "importance_mean": float(I[name].double().mean()),
                }
            )
    return pd.DataFrame(rows, columns=STAT_COLUMNS)


def save_fisher_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the statistics table with pyarrow; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


def _per_layer(df: pd.DataFrame) -> pd.Series:
    """Numel-weighted mean disparity per layer (each parameter tensor counted once)."""
    per_param = df.drop_duplicates("param")[["layer", "param", "numel", "disparity_mean"]]
    weighted = (per_param["disparity_mean"] * per_param["numel"]).groupby(per_param["layer"], sort=False).sum()
    return weighted / per_param.groupby("layer", sort=False)["numel"].sum()


def plot_disparity(df: pd.DataFrame, path: str | Path, title: str = "Fisher disparity per layer") -> Path:
    """Horizontal bar chart of the mean disparity D per layer (PNG); returns the path."""
    # lazy: matplotlib (slow to import) only when a plot is drawn, never for a trial
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # lazy: after choosing the headless backend above

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    series = _per_layer(df) if len(df) else pd.Series(dtype=float)
    n = max(len(series), 1)
    fig, ax = plt.subplots(figsize=(8, min(0.28 * n + 1.5, 40)))
    try:
        ax.barh(range(len(series)), series.values, color="tab:red")
        ax.set_yticks(range(len(series)))
        ax.set_yticklabels(list(series.index), fontsize=8 if n <= 60 else 6)
        ax.invert_yaxis()  # model order, top to bottom
        ax.set_xlabel("mean disparity  max_g F_n - min_g F_n")
        ax.set_title(title)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path
