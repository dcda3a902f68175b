"""The report's figures, drawn with matplotlib's object API (no pyplot state, no backend switch).

Each ``*_figure`` function takes plain data (dicts, arrays) and returns a ``Figure``;
``to_png`` turns one into PNG bytes. Every figure has a title, axis labels and a legend.
"""
from __future__ import annotations

import io
import math
from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

STATUS_STYLE = {
    "completed": {"color": "tab:blue", "label": "completed"},
    "stopped_early": {"color": "tab:orange", "label": "stopped early by ASHA"},
    "failed": {"color": "0.6", "label": "failed"},
    "unknown": {"color": "tab:purple", "label": "status unknown"},
}
SELECTED_COLOR = "crimson"
METHOD_COLORS = ["crimson", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink"]


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _finite(*vals) -> bool:
    return all(math.isfinite(_f(v)) for v in vals)


# --------------------------------------------------------------------------- Pareto
def pareto_figure(trials: Sequence[Mapping], selected_id: Optional[str], rows: Sequence[Mapping],
                  front_2d: Sequence[str], front_groups: Sequence[str], baseline_ids: Mapping[str, str],
                  objective: str) -> Figure:
    """Left: validation overall vs worst-group AUC of every trial (front, selected, baseline trials).
    Right: the retrained configurations on test, with 95% bootstrap intervals."""
    fig = Figure(figsize=(13, 5.4))
    ax, bx = fig.subplots(1, 2)
    pts = {str(t["trial_id"]): (_f(t["metrics"].get("overall_auc")), _f(t["metrics"].get("min_auc")), t.get("status"))
           for t in trials}
    pts = {k: v for k, v in pts.items() if _finite(v[0], v[1])}
    handles = []
    for status, style in STATUS_STYLE.items():
        xs = [v[0] for v in pts.values() if (v[2] or "unknown") == status]
        ys = [v[1] for v in pts.values() if (v[2] or "unknown") == status]
        if xs:
            ax.scatter(xs, ys, s=36, color=style["color"], alpha=0.8, edgecolor="white", linewidth=0.5, zorder=3)
            handles.append(Line2D([], [], marker="o", ls="", color=style["color"], label=f"trial: {style['label']} ({len(xs)})"))
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
    markers = {"full": ("s", "tab:green", "full fine-tuning trial (all ones)"),
               "linear": ("D", "tab:brown", "linear-probe trial (all zeros)")}
    for kind, tid in baseline_ids.items():
        if tid in pts and kind in markers:
            m, c, lab = markers[kind]
            ax.scatter([pts[tid][0]], [pts[tid][1]], marker=m, s=110, color=c, edgecolor="black", zorder=5)
            handles.append(Line2D([], [], marker=m, ls="", color=c, mec="black", ms=9, label=lab))
    if selected_id in pts:
        x, y, _ = pts[selected_id]
        ax.scatter([x], [y], marker="*", s=340, color=SELECTED_COLOR, edgecolor="black", zorder=6)
        ax.annotate("selected", (x, y), xytext=(8, 8), textcoords="offset points", fontsize=9, color=SELECTED_COLOR)
        handles.append(Line2D([], [], marker="*", ls="", color=SELECTED_COLOR, mec="black", ms=15, label="selected trial"))
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

    drawn = False
    for i, r in enumerate(rows):
        x, y = _f(r.get("test/overall_auc")), _f(r.get("test/min_auc"))
        if not _finite(x, y):
            continue
        xe = [[max(0.0, x - _f(r.get("test/overall_auc_lo", x)))], [max(0.0, _f(r.get("test/overall_auc_hi", x)) - x)]]
        ye = [[max(0.0, y - _f(r.get("test/min_auc_lo", y)))], [max(0.0, _f(r.get("test/min_auc_hi", y)) - y)]]
        xe, ye = np.nan_to_num(np.array(xe)), np.nan_to_num(np.array(ye))
        sel = "selected" in str(r.get("method", "")).lower()
        bx.errorbar([x], [y], xerr=xe, yerr=ye, fmt="*" if sel else "o", ms=16 if sel else 8, capsize=3,
                    color=METHOD_COLORS[i % len(METHOD_COLORS)], mec="black", label=str(r.get("method")), zorder=3)
        drawn = True
    if not drawn:
        bx.text(0.5, 0.5, "no retrained results", ha="center", va="center", transform=bx.transAxes)
    bx.set_xlabel("test overall AUC")
    bx.set_ylabel("test worst-group AUC")
    bx.set_title("Retrained configurations on test (95% bootstrap CI)")
    bx.grid(alpha=0.3)
    if drawn:
        bx.legend(fontsize=8, loc="lower right")
    fig.suptitle("Overall AUC against worst-group AUC", fontsize=13)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- masks
def mask_heatmap_figure(trials: Sequence[Mapping], bit_keys: Sequence[str], group_names: Sequence[str],
                        objective: str, mode: str, selected_id: Optional[str], top: int = 15) -> Figure:
    """Rows: the top trials by validation objective (best first); columns: parameter groups.
    A trained group is coloured by the trial's objective; a frozen group is light grey."""
    from matplotlib import colormaps

    ok = [t for t in trials if math.isfinite(_f(t.get("objective")))]
    ok.sort(key=lambda t: _f(t["objective"]), reverse=(mode == "max"))
    shown = ok[:top]
    n, k = len(shown), len(bit_keys)
    bits = np.array([[int(_f(t["config"].get(b, 0)) or 0) for b in bit_keys] for t in shown], dtype=float).reshape(n, k)
    obj = np.array([_f(t["objective"]) for t in shown])
    data = np.where(bits > 0, obj[:, None], np.nan)
    fig = Figure(figsize=(max(7.5, 0.42 * k + 4.5), max(3.2, 0.36 * n + 2.4)))
    ax = fig.subplots()
    cmap = colormaps["viridis" if mode == "max" else "viridis_r"].with_extremes(bad="#ececec")
    vmin, vmax = (float(np.nanmin(obj)), float(np.nanmax(obj))) if n else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 1e-3, vmax + 1e-3
    im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(k))
    ax.set_xticklabels(list(group_names), rotation=70, ha="right", fontsize=8)
    labels = []
    for t in shown:
        star = "\u2605 " if str(t["trial_id"]) == str(selected_id) else ""
        lr = _f(t["config"].get("lr"))
        labels.append(f"{star}{t['trial_id']}  {_f(t['objective']):.3f}  lr {lr:.1e}  "
                      f"({int(sum(int(_f(t['config'].get(b, 0)) or 0) for b in bit_keys))}/{k})")
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels, fontsize=8, family="monospace")
    ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.2)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("parameter group (one mask bit each)")
    ax.set_ylabel(f"trial (val {objective}, lr, trained groups)")
    best = "highest" if mode == "max" else "lowest"
    ax.set_title(f"Masks of the top {n} trials ({best} validation {objective} first)", pad=30)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label(f"validation {objective} of the trial (trained groups)")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(facecolor="#ececec", edgecolor="0.7", label="frozen group"),
                       Patch(facecolor=cmap(0.7), label="trained group (colour = objective)")],
              fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- ROC
def roc_figure(curves: Mapping[str, Mapping[str, tuple]], aucs: Mapping[str, Mapping[str, float]],
               counts: Mapping[str, tuple[int, int]]) -> Figure:
    """``curves[method][group] = (fpr, tpr)``: one panel per group (overall first), one curve per method."""
    groups: list[str] = []
    for per in curves.values():
        for g in per:
            if g not in groups:
                groups.append(g)
    if "overall" in groups:
        groups.remove("overall")
        groups.insert(0, "overall")
    ncols = min(4, max(1, len(groups)))
    nrows = max(1, math.ceil(len(groups) / ncols))
    fig = Figure(figsize=(4.2 * ncols, 4.0 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, g in zip(axes, groups):
        for i, (method, per) in enumerate(curves.items()):
            if g not in per:
                continue
            fpr, tpr = per[g]
            sel = "selected" in method.lower()
            ax.plot(fpr, tpr, color=METHOD_COLORS[i % len(METHOD_COLORS)], lw=2.4 if sel else 1.5,
                    label=f"{method} (AUC {aucs.get(method, {}).get(g, float('nan')):.3f})")
        ax.plot([0, 1], [0, 1], color="0.7", ls=":", lw=0.8, label="chance")
        n, pos = counts.get(g, (0, 0))
        ax.set_title(f"{'all test images' if g == 'overall' else 'group ' + g} (n={n}, {pos} positive)", fontsize=10)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="lower right")
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    if not groups:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no group has both classes on test", ha="center", va="center")
    fig.suptitle("Test ROC curves per group (scores averaged over retrain seeds)", fontsize=13)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- epochs
def epochs_figure(histories: Sequence[Mapping], objective: str, mode: str, max_epochs: Optional[int],
                  rungs: Sequence[float], selected_id: Optional[str], baseline_ids: Mapping[str, str]) -> Figure:
    """Validation objective per epoch, one line per trial; an x marks where ASHA stopped a trial."""
    fig = Figure(figsize=(10, 5.4))
    ax = fig.subplots()
    counts: dict[str, int] = {}
    base_of = {v: k for k, v in baseline_ids.items()}
    for h in histories:
        steps, vals = list(h["steps"]), list(h["values"])
        if not steps:
            continue
        status = h.get("status") if h.get("status") in STATUS_STYLE else "unknown"
        style = STATUS_STYLE.get(status, STATUS_STYLE["unknown"])
        counts[status] = counts.get(status, 0) + 1
        tid = str(h.get("trial_id"))
        color, lw, z, ls = style["color"], 1.0, 2, "-"
        if tid in base_of:
            color, lw, z, ls = ("tab:green" if base_of[tid] == "full" else "tab:brown"), 1.8, 3, "--"
        if tid == str(selected_id):
            color, lw, z, ls = SELECTED_COLOR, 2.6, 4, "-"
        ax.plot(steps, vals, color=color, lw=lw, ls=ls, alpha=0.9, marker="o", ms=3, zorder=z)
        if status == "stopped_early":
            ax.scatter([steps[-1]], [vals[-1]], marker="X", s=70, color="tab:orange", edgecolor="black", zorder=5)
        elif status == "failed":
            ax.scatter([steps[-1]], [vals[-1]], marker="v", s=50, color="0.4", zorder=5)
    for r in rungs:
        ax.axvline(r, color="0.5", ls=":", lw=1)
    handles = [Line2D([], [], color=STATUS_STYLE[s]["color"], lw=1.2, label=f"{STATUS_STYLE[s]['label']} ({c})")
               for s, c in sorted(counts.items(), key=lambda kv: list(STATUS_STYLE).index(kv[0]))]
    if counts.get("stopped_early"):
        handles.append(Line2D([], [], marker="X", ls="", color="tab:orange", mec="black", ms=9, label="ASHA stopped the trial here"))
    if counts.get("failed"):
        handles.append(Line2D([], [], marker="v", ls="", color="0.4", label="trial failed here"))
    if "full" in baseline_ids:
        handles.append(Line2D([], [], color="tab:green", ls="--", lw=1.8, label="full fine-tuning trial"))
    if "linear" in baseline_ids:
        handles.append(Line2D([], [], color="tab:brown", ls="--", lw=1.8, label="linear-probe trial"))
    if selected_id is not None and any(str(h.get("trial_id")) == str(selected_id) for h in histories):
        handles.append(Line2D([], [], color=SELECTED_COLOR, lw=2.6, label="selected trial"))
    if rungs:
        handles.append(Line2D([], [], color="0.5", ls=":", label="ASHA rung (stop decision after epoch)"))
    if not counts:
        ax.text(0.5, 0.5, "no per-epoch history", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {objective}")
    better = "higher" if mode == "max" else "lower"
    ax.set_title(f"Validation objective per epoch per trial ({better} is better)")
    if max_epochs:
        ax.set_xlim(0.7, max_epochs + 0.3)
        ax.set_xticks(range(1, max_epochs + 1) if max_epochs <= 30 else np.linspace(1, max_epochs, 10).astype(int))
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Fisher
LAYER_KINDS = (("attn", "tab:red", "attention"), ("mlp", "tab:blue", "MLP"), ("norm", "tab:green", "norm"),
               ("head", "tab:purple", "head"))


def per_layer_disparity(df) -> "list[tuple[str, float]]":
    """Numel-weighted mean disparity per layer (each parameter tensor counted once), model order."""
    per_param = df.drop_duplicates("param")[["layer", "numel", "disparity_mean"]]
    w = (per_param["disparity_mean"] * per_param["numel"]).groupby(per_param["layer"], sort=False).sum()
    n = per_param.groupby("layer", sort=False)["numel"].sum()
    return [(str(k), float(v)) for k, v in (w / n).items()]


def fisher_figure(df) -> Figure:
    """Horizontal bars of Fisher disparity per layer, coloured by the kind of layer."""
    from matplotlib.patches import Patch

    layers = per_layer_disparity(df)
    n = max(len(layers), 1)
    fig = Figure(figsize=(9, min(0.28 * n + 1.8, 40)))
    ax = fig.subplots()

    def kind(name: str):
        return next(((c, lab) for key, c, lab in LAYER_KINDS if key in name.split(".")[-1] or f".{key}" in name),
                    ("0.5", "other"))

    colors = [kind(name)[0] for name, _ in layers]
    ax.barh(range(len(layers)), [v for _, v in layers], color=colors)
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels([name for name, _ in layers], fontsize=8 if n <= 60 else 6)
    ax.invert_yaxis()
    ax.set_xlabel("mean disparity  max_g F_n - min_g F_n  (group-normalised Fisher)")
    ax.set_ylabel("layer (model order)")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    ax.set_title("Fisher disparity per layer: how group-specific each layer's importance is")
    seen = dict.fromkeys(kind(name) for name, _ in layers)
    ax.legend(handles=[Patch(color=c, label=lab) for c, lab in seen], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="layer kind")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
