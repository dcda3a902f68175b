"""``fairtune-ray data prepare <dataset> --root DIR --out DIR ...``: the command-line face of
:mod:`fairtune_ray.data.prepare`.

The main CLI calls :func:`register` with its sub-parsers; for scripting,
``python -m fairtune_ray.cli.data <dataset> --root ... --out ...`` works on its own
(``data prepare`` in front is accepted too).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Optional, Sequence

from fairtune_ray.data.adapters import ADAPTERS, DataWarning
from fairtune_ray.data.manifest import DataError
from fairtune_ray.data.prepare import format_summary, prepare_dataset

DESCRIPTION = ("Turn a dataset in its published layout into split, validated, packed uint8 image shards "
               "(manifest.parquet, dataset.json, summary.json, shards/).")

_GENERIC_FLAGS = {"table": "table", "image_column": "image_column", "image_root": "image_root",
                  "label": "label", "patient_column": "patient_column", "split_column": "split_column"}


def _epilog() -> str:
    lines = ["datasets (see each adapter's docstring for the expected files):"]
    for name, cls in ADAPTERS.items():
        attrs = ", ".join(cls.attributes) or "from --attribute"
        lines.append(f"  {name:15s} {cls.describe()}")
        lines.append(f"  {'':15s} attributes: {attrs}")
        for key, opt in cls.options.items():
            d = opt.default
            shown = ",".join(f"{x:g}" for x in d) if isinstance(d, tuple) else d
            default = "" if d is None else f" (default: {shown})"
            lines.append(f"  {'':15s} --option {key}=...  {opt.help}{default}")
    lines += ["", "examples:",
              "  fairtune-ray data prepare ham10000 --root ~/data/HAM10000 --out data/ham10000",
              "  fairtune-ray data prepare chexpert --root ~/data/CheXpert-v1.0-small --out data/chexpert "
              "--attribute sex age_binary race --workers 8",
              "  fairtune-ray data prepare generic --root ~/celeba --out data/celeba --table attrs.csv "
              "--image-column image_id --image-root img_align_celeba --label 'Smiling == 1' --attribute sex=Male"]
    return "\n".join(lines)


def add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help=f"one of: {', '.join(ADAPTERS)}")
    p.add_argument("--root", required=True, help="the dataset as downloaded (its published layout)")
    p.add_argument("--out", required=True, help="output folder (local path or pyarrow URI, e.g. s3://bucket/x)")
    p.add_argument("--attribute", nargs="+", action="extend", default=None, metavar="NAME",
                   help="sensitive attributes to include (default: all the dataset offers); for 'generic': "
                        "NAME[=COLUMN][:CUT1,CUT2,...]")
    p.add_argument("--size", type=int, default=224, help="crop size in pixels (default 224)")
    p.add_argument("--resize", type=int, default=None,
                   help="short side before the centre crop (default 256 for --size 224, else --size * 8/7)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient-level split (default 0)")
    p.add_argument("--split-fractions", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VAL", "TEST"),
                   help="train/val/test fractions of patients when no official split is used (default 0.8 0.1 0.1)")
    p.add_argument("--drop-missing", action="store_true",
                   help="drop rows whose image is missing or unreadable, or that have no patient id (recorded in "
                        "dataset.json) instead of failing")
    p.add_argument("--require-coverage", action="store_true",
                   help="fail when a group has no rows, or only one class, in val or test (default: warn; the search "
                        "refuses such a split for its data.sensitive_attribute)")
    p.add_argument("--min-group-size", type=int, default=0,
                   help="fail when a group has fewer samples than this in any split (default 0: only warn)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--shard-size", type=int, default=2048, help="images per Parquet shard (default 2048)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an adapter-specific option (repeatable), listed below")
    g = p.add_argument_group("generic tables (same as --option KEY=VALUE)")
    g.add_argument("--table", help="CSV/Parquet table, one row per image")
    g.add_argument("--image-column", help="column with image paths")
    g.add_argument("--image-root", help="folder the image paths are relative to")
    g.add_argument("--label", help="0/1 column or pandas expression, e.g. \"dx in ['mel', 'akiec']\"")
    g.add_argument("--patient-column", help="split unit column")
    g.add_argument("--split-column", help="official train/val/test split column")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``data prepare`` to the main CLI's sub-parsers; returns the ``data`` parser."""
    data = subparsers.add_parser("data", help="prepare real datasets (data prepare ...)",
                                 description="Dataset preparation.")
    sub = data.add_subparsers(dest="data_command", metavar="{prepare}")
    sub.required = True
    prep = sub.add_parser("prepare", help="turn a published dataset into packed, split, validated shards",
                          description=DESCRIPTION, epilog=_epilog(),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    add_prepare_arguments(prep)
    prep.set_defaults(func=run_prepare, handler=run_prepare)
    return data


def _options(args: argparse.Namespace) -> dict[str, str]:
    opts: dict[str, str] = {}
    for item in args.option or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise DataError(f"--option expects KEY=VALUE, got '{item}'")
        opts[key.strip().replace("-", "_")] = value
    for attr, key in _GENERIC_FLAGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            opts[key] = value
    return opts


def run_prepare(args: argparse.Namespace) -> int:
    """Handler of ``data prepare``: prepare, print the summary table; 0 on success, 2 on a data error."""
    resize = args.resize
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)     # printed below, once, in plain words
            result = prepare_dataset(
                args.dataset, args.root, args.out, attributes=args.attribute, options=_options(args),
                size=args.size, resize=resize, workers=args.workers, seed=args.seed,
                split_fractions=args.split_fractions, drop_missing=args.drop_missing,
                require_coverage=args.require_coverage,
                min_group_size=args.min_group_size, overwrite=args.overwrite, shard_size=args.shard_size,
                progress=not args.no_progress)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    info = result.info
    print(f"prepared {info.name}: {len(result.manifest)} images, {info.image_size}x{info.image_size}x{info.channels}, "
          f"split: {info.extra.get('split')} -> {result.out}")
    dropped = info.extra.get("dropped") or {}
    if dropped:
        print("dropped: " + json.dumps({k: v["count"] for k, v in dropped.items()}))
    print(format_summary(result.summary, info))
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"(summary.json, dataset.json and manifest.parquet are in {result.out})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Standalone entry point: ``python -m fairtune_ray.cli.data [data prepare] <dataset> ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["data", "prepare"]:
        argv = argv[2:]
    elif argv[:1] == ["prepare"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="fairtune-ray data prepare", description=DESCRIPTION,
                                     epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_prepare_arguments(parser)
    return run_prepare(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
