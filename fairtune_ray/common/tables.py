"""Aligned markdown tables for the terminal, MLflow notes and the README."""
from __future__ import annotations

import math
from typing import Sequence


def fmt_value(v) -> str:
    """Floats to three decimals, NaN as 'n/a', anything else as ``str``."""
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """Render rows as an aligned markdown table; ``columns`` are (key, header) pairs."""
    cells = [[h for _, h in columns]] + [[fmt_value(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])
