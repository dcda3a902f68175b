"""``fairtune-ray evaluate MODEL DATA``: audit an exported model on a prepared dataset (the one it
was trained on, or another: external validation), per group with 95 % bootstrap intervals."""
from __future__ import annotations

import argparse
import json
import tempfile

from fairtune_ray.cli.model_args import add_model_arguments, describe_job


def cmd_evaluate(args) -> int:
    # lazy: torch, timm and MLflow, only for this command
    from fairtune_ray.common.files import atomic_write_text
    from fairtune_ray.export.evaluation import cross_group_table, evaluate_scores, group_table, log_evaluation
    from fairtune_ray.export.folder import json_safe
    from fairtune_ray.export.scoring import prepare_scoring, score_job
    from fairtune_ray.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="fairtune-model-") as tmp:
        job = prepare_scoring(args.model, args.data, args.split, uri, tmp, attribute=_attributes(args.attribute))
        scores = score_job(job, device=args.device)
        manifest, attribute, groups = job.data.manifest, job.attribute, job.data.groups
        result = evaluate_scores(manifest["label"].to_numpy(), scores, groups.encode(manifest), groups.names,
                                 threshold=float(job.meta.get("threshold", 0.5)), n_boot=args.bootstrap, seed=args.seed,
                                 positive_is_disease=job.data.info.positive_is_disease)
        report = {**describe_job(args, job), "bootstrap": args.bootstrap, "seed": args.seed, **result}
        atomic_write_text(args.out, json.dumps(json_safe(report), indent=2, default=float))
        print(f"{report['summary']}\n\nper group ({attribute}), 95% bootstrap intervals:\n{group_table(result)}\n\n"
              f"across groups:\n{cross_group_table(result)}\n\nwritten: {args.out}")
        if args.log_mlflow:
            params = {k: v for k, v in report.items() if isinstance(v, (str, int, float, bool)) and k != "summary"}
            run_id = log_evaluation(uri, args.experiment, f"evaluate-{report['dataset']}-{args.split}", params, result,
                                    json_path=args.out)
            print(f"MLflow run {run_id} in {uri}")
    return 0


def _attributes(text):
    """``--attribute``: one name, or several separated by commas (intersectional groups); None: the model's."""
    if not text:
        return None
    names = [a.strip() for a in text.split(",") if a.strip()]
    return names[0] if len(names) == 1 else names


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("evaluate", help="per-group metrics with 95%% intervals of an exported model on a dataset")
    add_model_arguments(sp, default_split="test")
    sp.add_argument("--attribute", help="sensitive attribute to audit, or several separated by commas for their "
                                        "intersectional groups, e.g. sex,age_binary (default: the model's own)")
    sp.add_argument("--out", default="evaluation.json", help="JSON file to write (default evaluation.json)")
    sp.add_argument("--bootstrap", type=_at_least_one, default=1000, help="bootstrap replicates (default 1000)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    sp.add_argument("--log-mlflow", action="store_true", help="log the evaluation to a new MLflow run")
    sp.add_argument("--experiment", default="fairtune-evaluate", help="MLflow experiment of --log-mlflow")
    sp.set_defaults(func=cmd_evaluate)
