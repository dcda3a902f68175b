"""The Pareto figure: every trial's validation overall vs worst-group AUC, and the retrained rows on test.

Drawn in named layers (trials by status, fronts, baseline trials, the selection) so each can be read
on its own; the selected test row is found by its role, never by its label.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fairtune_ray.reporting.plots import METHOD_COLORS, SELECTED_COLOR, STATUS_STYLE, all_finite, as_float
from fairtune_ray.search.results import ResultRow


def pareto_figure(trials: Sequence[Mapping], selected_id: Optional[str], rows: Sequence[ResultRow],
                  front_2d: Sequence[str], front_groups: Sequence[str], baseline_ids: Mapping[str, str],
                  objective: str) -> Figure:
    """Left: validation overall vs worst-group AUC of every trial (front, selected, baseline trials).
    Right: the retrained configurations on test, with 95% bootstrap intervals."""
    fig = Figure(figsize=(13, 5.4))
    ax, bx = fig.subplots(1, 2)
    _validation_panel(ax, _trial_points(trials), selected_id, front_2d, front_groups, baseline_ids, objective)
    _test_panel(bx, rows)
    fig.suptitle("Overall AUC against worst-group AUC", fontsize=13)
    fig.tight_layout()
    return fig


def _trial_points(trials: Sequence[Mapping]) -> dict[str, tuple[float, float, Optional[str]]]:
    """{trial id: (overall AUC, worst-group AUC, status)} of the trials with both AUCs defined."""
    pts = {str(t["trial_id"]): (as_float(t["metrics"].get("overall_auc")), as_float(t["metrics"].get("min_auc")),
                                t.get("status")) for t in trials}
    return {k: v for k, v in pts.items() if all_finite(v[0], v[1])}


def _validation_panel(ax, pts: Mapping[str, tuple], selected_id: Optional[str], front_2d: Sequence[str],
                      front_groups: Sequence[str], baseline_ids: Mapping[str, str], objective: str) -> None:
    handles = _scatter_by_status(ax, pts) + _mark_fronts(ax, pts, front_2d, front_groups)
    handles += _mark_baselines(ax, pts, baseline_ids) + _mark_selected(ax, pts, selected_id)
    if pts:
        lo = min(min(v[0], v[1]) for v in pts.values())
        hi = max(max(v[0], v[1]) for v in pts.values())
        pad = max(0.02, 0.05 * (hi - lo))
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.75", lw=0.8, ls=":", zorder=1)
        handles.append(Line2D([], [], color="0.75", ls=":", label="worst group = overall"))
    else:
        ax.text(0.5, 0.5, "no trial with defined AUCs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("validation overall AUC")
    ax.set_ylabel("validation worst-group AUC")
    ax.set_title(f"All trials on validation (best epoch; objective {objective})")
    ax.grid(alpha=0.3)
    # worst-group AUC rarely exceeds overall AUC, so the upper-left triangle is free for the legend
    ax.legend(handles=handles, fontsize=8, loc="upper left", framealpha=0.9)


def _scatter_by_status(ax, pts: Mapping[str, tuple]) -> list[Line2D]:
    handles = []
    for status, style in STATUS_STYLE.items():
        xs = [v[0] for v in pts.values() if (v[2] or "unknown") == status]
        ys = [v[1] for v in pts.values() if (v[2] or "unknown") == status]
        if xs:
            ax.scatter(xs, ys, s=36, color=style["color"], alpha=0.8, edgecolor="white", linewidth=0.5, zorder=3)
            handles.append(Line2D([], [], marker="o", ls="", color=style["color"], label=f"trial: {style['label']} ({len(xs)})"))
    return handles


def _mark_fronts(ax, pts: Mapping[str, tuple], front_2d: Sequence[str], front_groups: Sequence[str]) -> list[Line2D]:
    handles = []
    ring = [pts[t] for t in front_groups if t in pts]
    if ring:
        ax.scatter([p[0] for p in ring], [p[1] for p in ring], s=110, facecolor="none", edgecolor="black",
                   linewidth=1.0, zorder=4)
        handles.append(Line2D([], [], marker="o", ls="", mfc="none", mec="black", ms=10,
                              label="non-dominated over per-group AUCs"))
    front = sorted((pts[t] for t in front_2d if t in pts), key=lambda p: p[0])
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="pre", color="black", ls="--", lw=1.2, zorder=2)
        handles.append(Line2D([], [], color="black", ls="--", label="Pareto front (overall vs worst-group AUC)"))
    return handles


BASELINE_MARKERS = {"full": ("s", "tab:green", "full fine-tuning trial (all ones)"),
                    "linear": ("D", "tab:brown", "linear-probe trial (all zeros)")}


def _mark_baselines(ax, pts: Mapping[str, tuple], baseline_ids: Mapping[str, str]) -> list[Line2D]:
    handles = []
    for kind, tid in baseline_ids.items():
        if tid in pts and kind in BASELINE_MARKERS:
            m, c, lab = BASELINE_MARKERS[kind]
            ax.scatter([pts[tid][0]], [pts[tid][1]], marker=m, s=110, color=c, edgecolor="black", zorder=5)
            handles.append(Line2D([], [], marker=m, ls="", color=c, mec="black", ms=9, label=lab))
    return handles


def _mark_selected(ax, pts: Mapping[str, tuple], selected_id: Optional[str]) -> list[Line2D]:
    if selected_id not in pts:
        return []
    x, y, _ = pts[selected_id]
    ax.scatter([x], [y], marker="*", s=340, color=SELECTED_COLOR, edgecolor="black", zorder=6)
    ax.annotate("selected", (x, y), xytext=(8, 8), textcoords="offset points", fontsize=9, color=SELECTED_COLOR)
    return [Line2D([], [], marker="*", ls="", color=SELECTED_COLOR, mec="black", ms=15, label="selected trial")]


def _error_bar(row: ResultRow, metric: str) -> np.ndarray:
    """[[below], [above]] the point: the distance to the interval's ends (0 where undefined)."""
    iv = row.test[metric]
    return np.nan_to_num(np.array([[max(0.0, iv.point - iv.lo)], [max(0.0, iv.hi - iv.point)]]))


def _test_panel(bx, rows: Sequence[ResultRow]) -> None:
    """The retrained configurations on test; the selected one (by role) is the star."""
    drawn = False
    for i, r in enumerate(rows):
        x, y = r.metric("overall_auc"), r.metric("min_auc")
        if not all_finite(x, y):
            continue
        sel = r.is_selected
        bx.errorbar([x], [y], xerr=_error_bar(r, "overall_auc"), yerr=_error_bar(r, "min_auc"), fmt="*" if sel else "o",
                    ms=16 if sel else 8, capsize=3, color=METHOD_COLORS[i % len(METHOD_COLORS)], mec="black",
                    label=r.method, zorder=3)
        drawn = True
    if not drawn:
        bx.text(0.5, 0.5, "no retrained results", ha="center", va="center", transform=bx.transAxes)
    bx.set_xlabel("test overall AUC")
    bx.set_ylabel("test worst-group AUC")
    bx.set_title("Retrained configurations on test (95% bootstrap CI)")
    bx.grid(alpha=0.3)
    if drawn:
        bx.legend(fontsize=8, loc="lower right")
