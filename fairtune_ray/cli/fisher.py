"""`fairtune-ray fisher [config]`: compute (or reuse) the per-group Fisher without searching.

Prints a per-layer summary sorted by disparity and the paths of the cached statistics
(Parquet), plot and importance file. Runs in-process (on the GPU when there is one); pass
``--ray`` to run it as a Ray task on a local instance or the cluster at $RAY_ADDRESS, as the
search does.
"""
from __future__ import annotations

import argparse
import os

from fairtune_ray.cli.common import load_args_config
from fairtune_ray.common.tables import format_table


def _fmt_table(summary, top: int | None) -> str:
    rows = summary.head(top) if top else summary
    shown = [{"layer": r.layer, "numel": f"{int(r.numel):,}", "disparity": f"{r.mean_disparity:.3e}",
              "importance": f"{100 * r.importance_share:.2f}%"} for r in rows.itertuples()]
    return format_table(shown, [("layer", "layer"), ("numel", "numel"), ("disparity", "mean disparity D"),
                                ("importance", "importance (share of I)")])


def cmd_fisher(args) -> int:
    # lazy: torch (and Ray with --ray), only for this command
    from fairtune_ray.data.groups import report_small_groups
    from fairtune_ray.data.loading import load_dataset
    from fairtune_ray.fisher.cache import compute_fisher, layer_summary
    from fairtune_ray.training.pretrain import resolve_checkpoint

    cfg = load_args_config(args)
    data = load_dataset(cfg.data)
    report_small_groups(data.groups, print)
    checkpoint = resolve_checkpoint(cfg)
    if args.ray:
        import ray  # lazy: only with --ray

        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            ray.init(address=address) if address else ray.init(include_dashboard=False)
    result = compute_fisher(cfg, data, checkpoint, use_ray=bool(args.ray))
    summary = layer_summary(result.stats)
    samples = ", ".join(f"{g}: {n}" for g, n in result.meta.get("samples", {}).items())
    print(f"\nper-group Fisher by {data.groups.attribute} ({samples} samples) at the pre-trained "
          f"weights of {cfg.backbone.name}; {sum(t.numel() for t in result.D.values()):,} parameters in "
          f"{len(summary)} linear/norm layers; mean disparity {result.mean_disparity:.3e}"
          f"{' (cached)' if result.cached else ''}\n")
    print(_fmt_table(summary, args.top))
    if args.top and len(summary) > args.top:
        print(f"... {len(summary) - args.top} more layers in the Parquet file")
    print(f"\nstatistics: {result.parquet_path}\nplot:       {result.plot_path}\nimportance: {result.importance_path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser("fisher", help="compute the per-group Fisher and print a per-layer summary (no search)")
    sp.add_argument("config", nargs="?", default=None, help="experiment YAML (default: embedded synthetic)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set fisher.samples_per_group=32 (repeatable)")
    sp.add_argument("--top", type=int, default=None, help="show only the N most group-specific layers")
    sp.add_argument("--ray", action="store_true", help="run as a Ray task ($RAY_ADDRESS or a local instance)")
    sp.set_defaults(func=cmd_fisher)
