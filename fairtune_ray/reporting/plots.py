"""The report's figures, drawn with matplotlib's object API (no pyplot state, no backend switch).

Each ``*_figure`` function takes plain data (dicts, arrays) and returns a ``Figure``; ``to_png``
turns one into PNG bytes. Every figure has a title, axis labels and a legend. The Pareto figure,
drawn in layers, is in ``pareto_plot``.
"""
from __future__ import annotations

import io
import math
from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

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


def as_float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def all_finite(*vals) -> bool:
    return all(math.isfinite(as_float(v)) for v in vals)


# --------------------------------------------------------------------------- masks
def peft_label(config: Mapping) -> str:
    """The trial's PEFT method for a row label ('' for a mask alone): '  lora r8 a16 qkv+proj', '  ia3 fc1+fc2'."""
    method = str(config.get("peft", "mask"))
    if method == "mask":
        return ""
    rank, alpha = int(as_float(config.get("peft_rank"))), as_float(config.get("peft_alpha"))
    settings = "" if method == "ia3" else f" r{rank} a{alpha:g}"  # IA3 reads neither
    return f"  {method}{settings} {config.get('peft_targets', '')}"


def mask_heatmap_figure(trials: Sequence[Mapping], bit_keys: Sequence[str], group_names: Sequence[str],
                        objective: str, mode: str, selected_id: Optional[str], top: int = 15) -> Figure:
    """Rows: the top trials by validation objective (best first); columns: parameter groups.
    A trained group is coloured by the trial's objective; a frozen group is light grey."""
    ok = [t for t in trials if math.isfinite(as_float(t.get("objective")))]
    ok.sort(key=lambda t: as_float(t["objective"]), reverse=(mode == "max"))
    shown = ok[:top]
    n, k = len(shown), len(bit_keys)
    bits = np.array([[int(as_float(t["config"].get(b, 0)) or 0) for b in bit_keys] for t in shown],
                    dtype=float).reshape(n, k)
    obj = np.array([as_float(t["objective"]) for t in shown])
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
        lr = as_float(t["config"].get("lr"))
        labels.append(f"{star}{t['trial_id']}  {as_float(t['objective']):.3f}  lr {lr:.1e}  "
                      f"({int(sum(int(as_float(t['config'].get(b, 0)) or 0) for b in bit_keys))}/{k})"
                      f"{peft_label(t['config'])}")
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels, fontsize=8, family="monospace")
    ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.2)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("parameter group (one mask bit each)")
    ax.set_ylabel(f"trial (val {objective}, lr, trained groups, PEFT method)")
    best = "highest" if mode == "max" else "lowest"
    ax.set_title(f"Masks of the top {n} trials ({best} validation {objective} first)", pad=30)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label(f"validation {objective} of the trial (trained groups)")
    ax.legend(handles=[Patch(facecolor="#ececec", edgecolor="0.7", label="frozen group"),
                       Patch(facecolor=cmap(0.7), label="trained group (colour = objective)")],
              fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- ROC
def roc_figure(curves: Mapping[str, Mapping[str, tuple]], aucs: Mapping[str, Mapping[str, float]],
               counts: Mapping[str, tuple[int, int]], selected: Optional[str] = None) -> Figure:
    """``curves[method][group] = (fpr, tpr)``: one panel per group (overall first), one curve per method;
    ``selected`` names the selected configuration's method, drawn thicker."""
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
            sel = method == selected
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


def forest_figure(rows: Sequence, metrics: Sequence[tuple[str, str, bool]]) -> Figure:
    """Selected minus each other row, one panel per metric: point and paired 95% interval per row.

    ``rows`` are result rows with ``vs_selected``; ``metrics`` are (name, label, higher_is_better).
    Green where the interval favours the selection, red where it favours the other row, grey where
    it includes 0."""
    fig = Figure(figsize=(4.2 * len(metrics), 0.6 * len(rows) + 1.6))
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    colors = {"better": "tab:green", "worse": "tab:red"}
    for ax, (name, label, higher) in zip(axes, metrics):
        for y, row in enumerate(rows):
            d = row.vs_selected[name]
            ax.errorbar([d.diff], [y], xerr=[[d.diff - d.lo], [d.hi - d.diff]], fmt="o", capsize=4,
                        color=colors.get(d.verdict, "0.45"))
        ax.axvline(0.0, color="black", lw=0.8, ls="--")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("selected − row" + (" (> 0 favours selected)" if higher else " (< 0 favours selected)"))
        ax.set_yticks(range(len(rows)), [f"vs {r.method}" for r in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
    axes[0].legend(handles=[Line2D([], [], marker="o", ls="", color=c, label=lbl) for lbl, c in
                            [("selection better", "tab:green"), ("selection worse", "tab:red"),
                             ("no detectable difference", "0.45")]], loc="best", fontsize=8)
    fig.suptitle("Paired differences on the same test resamples (95% intervals)")
    fig.tight_layout()
    return fig
