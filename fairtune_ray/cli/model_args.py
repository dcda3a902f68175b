"""What ``evaluate`` and ``predict`` share: the MODEL and DATA arguments and how a job is described."""
from __future__ import annotations

import argparse

SPLIT_CHOICES = ("train", "val", "test", "all")


def add_model_arguments(sp: argparse.ArgumentParser, default_split: str) -> None:
    sp.add_argument("model", help="a run folder (runs/<name>), a model folder (model.json + model.safetensors) "
                                  "or models:/NAME/VERSION from the MLflow Model Registry")
    sp.add_argument("data", help="a prepared dataset folder (fairtune-ray data prepare), local or s3://")
    sp.add_argument("--split", default=default_split, choices=SPLIT_CHOICES,
                    help=f"which rows to score (default {default_split}; 'all': every row)")
    sp.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ and --log-mlflow "
                                           "(default $MLFLOW_TRACKING_URI or sqlite:///mlruns.db)")
    sp.add_argument("--device", help="torch device (default: cuda when available, else cpu)")


def describe_job(args: argparse.Namespace, job) -> dict:
    """The JSON header of a scoring job and a one-paragraph summary for the terminal."""
    meta = job.meta
    spec = meta.get("spec", {})
    n = len(job.data.manifest)
    if job.same_data:
        origin = "the dataset the model was trained and tested on"
        if job.split in ("train", "val", "all"):
            origin += f" (the '{job.split}' rows include images used to fit or select the model)"
    else:
        origin = "another dataset than the model's (external validation)"
    source = args.model if args.model.startswith("models:/") else job.folder  # not the download's temp folder
    summary = (f"model: {meta.get('method', '?')} ({spec.get('mask')}, seed {spec.get('seed')}) from {source}\n"
               f"data: {job.data.info.name} at {args.data}, split '{job.split}', {n} images: {origin}")
    return {"model": args.model, "model_folder": str(source), "method": meta.get("method"), "mask": spec.get("mask"),
            "data": args.data, "dataset": job.data.info.name, "split": job.split, "attribute": job.attribute,
            "model_attribute": job.model_attribute, "n": n, "same_data_as_training": job.same_data,
            "threshold": float(meta.get("threshold", 0.5)), "summary": summary}
