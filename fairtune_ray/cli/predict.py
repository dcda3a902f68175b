"""``fairtune-ray predict MODEL DATA --out scores.parquet``: one score per image of a prepared dataset,
with its ids, split, label and every sensitive attribute, for analyses outside fairtune-ray."""
from __future__ import annotations

import argparse
import tempfile

from fairtune_ray.cli.model_args import add_model_arguments, describe_job


def cmd_predict(args) -> int:
    # lazy: torch, timm, MLflow and pandas, only for this command
    import pandas as pd

    from fairtune_ray.common.files import atomic_path
    from fairtune_ray.export.scoring import prepare_scoring, score_job
    from fairtune_ray.tracking import resolve_tracking_uri

    with tempfile.TemporaryDirectory(prefix="fairtune-model-") as tmp:
        job = prepare_scoring(args.model, args.data, args.split, resolve_tracking_uri(args.tracking_uri), tmp,
                              need_attribute=False)
        scores = score_job(job, device=args.device)
    manifest, info = job.data.manifest, job.data.info
    table = pd.DataFrame({c: manifest[c].to_numpy() for c in ("sample_id", "patient_id", "split")})
    for attribute, names in info.attributes.items():
        if attribute in manifest.columns:
            table[attribute] = manifest[attribute].to_numpy()
            table[f"{attribute}_group"] = manifest[attribute].map(names).astype(str).to_numpy()
    table["label"] = manifest["label"].to_numpy()
    table["score"] = scores
    table["prediction"] = (scores >= float(job.meta.get("threshold", 0.5))).astype("int8")
    with atomic_path(args.out, suffix=".parquet") as out:
        table.to_parquet(out, index=False)
    print(f"{describe_job(args, job)['summary']}\n\nwritten: {args.out} ({len(table)} rows)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("predict", help="score every image of a prepared dataset with an exported model")
    add_model_arguments(sp, default_split="all")
    sp.add_argument("--out", default="scores.parquet", help="Parquet file to write (default scores.parquet)")
    sp.set_defaults(func=cmd_predict)
