"""Benchmark (study): does a warm start from a search on one attribute reach a validation objective
in fewer training epochs on another attribute?

The embedded synthetic data record two sensitive attributes: ``skin_tone`` (the groups the data are
built around: a low-contrast minority, an artefact that tracks the label in the majority only) and
``sex`` (drawn at random, independent of the label, the tone and the artefact). So a search on
``sex`` learns the task (which learning rates and parameter groups fit these lesions) but nothing
about the skin-tone disparity; whether that knowledge shortens a search on ``skin_tone`` is the
question. ``--source-attr`` / ``--target-attr`` swap or change the attributes, ``--source-data-seed``
makes the source another draw of the data (a 'second dataset') instead.

Design, all through the project's own stages (``prepare`` + ``run_tune``: the real trial function,
HyperOpt TPE, ASHA, MLflow child runs in a temporary SQLite store):
1. one source search on attribute A (``--source-trials`` trials);
2. per seed s (``--seeds``): a cold search on attribute B and a warm one with
   ``search.warm_start: <the source's run folder>``, both ``--trials`` trials with ``search.seed = s``,
   one trial at a time (so TPE sees the same history order in every run) with both cores.
Per search, every epoch report in the order the trials made them (MLflow metric timestamps) gives
the best-so-far validation objective against cumulative training epochs (all trials summed). The
target is the median of the cold searches' final best; reported: epochs until a search's best
reaches it (or not within its budget), its final best, and the epochs it spent in all (ASHA stops
weak trials, so that differs too).

    .venv/bin/python benchmarks/bench_warm_start.py [--quick] [--seeds 3] [--trials 8] [--source-trials 10]

With the default ``search.n_initial_points`` (6), a cold 8-trial search runs its 2 baselines, 4 random
trials, then 2 TPE trials; a warm one runs its 2 baselines, then TPE from the first proposal, since
the warm points count towards the 6. Full settings (3 seeds, 500 images + the demo's enlarged
validation split, 4 epochs): about 8 minutes on 2 quiet cores once the micro backbone is cached;
``--quick``: 1 seed, 4-trial searches, 300 images, 2 epochs (about 1.5 minutes quiet). Not part of
``make bench`` (a question about results, not speed).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The tune stage reads each trial's results back from Tune's per-trial logs (trials.json): keep them.
os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, env_info, init_local_ray, mean_sd, quiet_stdout  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def overrides(args, tmp: str, attribute: str, seed: int, trials: int, data_seed: int) -> dict:
    o = {
        "data.cache_dir": args.cache_dir, "data.sensitive_attribute": attribute, "data.synthetic.seed": data_seed,
        "data.synthetic.n_samples": args.n_samples, "train.epochs": args.epochs, "train.seed": seed,
        "train.threads": 0, "trial.resources.cpu": 2, "search.max_concurrent": 1, "search.reuse_actors": True,
        "search.num_samples": trials, "search.seed": seed, "search.storage": os.path.join(tmp, "runs"),
        "tracking.uri": f"sqlite:///{os.path.join(tmp, 'mlruns.db')}",
    }
    if args.quick:
        o.update({"data.synthetic.val_samples": 0, "data.synthetic.test_samples": 0, "data.synthetic.source_samples": 400,
                  "backbone.pretrain_epochs": 1, "data.batch_size": 64, "search.asha.grace_period": 1})
    return o


def run_study(cfg, name: str) -> dict:
    """prepare + tune (no selection, retrain or report); every epoch report in the order it was made."""
    from mlflow.tracking import MlflowClient

    from fairtune_ray.search.stages.prepare import prepare
    from fairtune_ray.search.stages.tune import run_tune
    from fairtune_ray.search.stages.types import SearchRequest
    from fairtune_ray.search.tune_value import epoch_value_key
    from fairtune_ray.tracking.mlflow_runs import PARENT_TAG
    from fairtune_ray.search.warm_start import read_warm_start

    log = lambda *a: print(*a, file=sys.stderr)  # noqa: E731
    t0 = time.perf_counter()
    prepared = prepare(SearchRequest(cfg, name=name), log)
    outcome = run_tune(prepared, log)
    fit_s = time.perf_counter() - t0
    client = MlflowClient(prepared.tracking_uri)
    exp = client.get_run(prepared.parent_run_id).info.experiment_id
    children = client.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{prepared.parent_run_id}'", max_results=5000)
    key = epoch_value_key(cfg)
    reports = sorted((m.timestamp, m.step, m.value) for run in children for m in client.get_metric_history(run.info.run_id, key))
    warm = read_warm_start(prepared.run_dir) if cfg.search.warm_start else None
    return {"run_dir": str(prepared.run_dir), "values": [v for _, _, v in reports], "fit_s": fit_s,
            "trials": len(outcome.trials), "warm_points": len(warm.points) if warm else 0}


def best_curve(values: list[float], sign: float) -> list[float]:
    out, best = [], math.nan
    for v in values:
        if not math.isnan(v) and (math.isnan(best) or sign * v > sign * best):
            best = v
        out.append(best)
    return out


def epochs_to(curve: list[float], target: float, sign: float):
    return next((i + 1 for i, v in enumerate(curve) if not math.isnan(v) and sign * v >= sign * target - 1e-12), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke test (1 seed, 4-trial searches, 300 images)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--trials", type=int, default=None, help="trials per cold / warm search on the target attribute")
    ap.add_argument("--source-trials", type=int, default=None, help="trials of the source search")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of a full trial")
    ap.add_argument("--n-samples", type=int, default=None)
    ap.add_argument("--source-attr", default="sex")
    ap.add_argument("--target-attr", default="skin_tone")
    ap.add_argument("--source-data-seed", type=int, default=0, help="data seed of the source search (target: 0)")
    ap.add_argument("--cache-dir", default=str(REPO / ".fairtune_cache"))
    args = ap.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.trials = args.trials or (4 if args.quick else 8)
    args.source_trials = args.source_trials or (4 if args.quick else 10)
    args.epochs = args.epochs or (2 if args.quick else 4)
    args.n_samples = args.n_samples or (300 if args.quick else 500)

    t_start = time.perf_counter()
    with quiet_stdout(), tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        import ray

        from fairtune_ray.config import load_config
        from fairtune_ray.metrics import parse_objective

        init_local_ray(2)
        source_cfg = load_config(None, overrides=overrides(args, tmp, args.source_attr, 100, args.source_trials,
                                                           args.source_data_seed))
        sign = parse_objective(source_cfg.train.objective).sign
        source = run_study(source_cfg, "source")
        runs = []
        for seed in range(args.seeds):
            cold_over = overrides(args, tmp, args.target_attr, seed, args.trials, 0)
            cold = run_study(load_config(None, overrides=cold_over), f"cold-{seed}")
            warm = run_study(load_config(None, overrides={**cold_over, "search.warm_start": source["run_dir"]}), f"warm-{seed}")
            runs.append({"seed": seed, "cold": cold, "warm": warm})
            print(f"seed {seed}: cold {cold['fit_s']:.0f} s, warm {warm['fit_s']:.0f} s", file=sys.stderr)
        ray.shutdown()

    objective = source_cfg.train.objective
    target = statistics.median(best_curve(r["cold"]["values"], sign)[-1] for r in runs)
    per_seed = []
    for r in runs:
        row = {"seed": r["seed"]}
        for kind in ("cold", "warm"):
            curve = best_curve(r[kind]["values"], sign)
            row.update({f"{kind}_epochs_to_target": epochs_to(curve, target, sign), f"{kind}_final_best": curve[-1],
                        f"{kind}_epochs": len(curve), f"{kind}_trials": r[kind]["trials"], f"{kind}_fit_s": r[kind]["fit_s"]})
        row["warm_points"] = r["warm"]["warm_points"]
        per_seed.append(row)

    def agg(key):
        vals = [p[key] for p in per_seed if p[key] is not None]
        m, s = mean_sd(vals)
        return {"mean": round(m, 4), "sd": round(s, 4), "n": len(vals)}

    keys = [f"{k}_{x}" for k in ("cold", "warm") for x in ("epochs_to_target", "final_best", "epochs", "fit_s")]
    result = {"bench": "warm_start", "quick": args.quick, "seeds": args.seeds, "trials_per_search": args.trials,
              "source_trials": args.source_trials, "epochs_per_trial": args.epochs, "n_samples": args.n_samples,
              "objective": objective, "source_attr": args.source_attr, "target_attr": args.target_attr,
              "source_data_seed": args.source_data_seed, "source_best": round(best_curve(source["values"], sign)[-1], 4),
              "warm_points": per_seed[0]["warm_points"], "target": round(target, 4), **{k: agg(k) for k in keys},
              "per_seed": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()} for p in per_seed],
              "total_s": round(time.perf_counter() - t_start, 1), **env_info()}

    def ms(key, digits=3):
        d = result[key]
        return "n/a" if d["n"] == 0 else f"{d['mean']:.{digits}f} ± {d['sd']:.{digits}f}"

    table = "\n".join([
        f"Target attribute `{args.target_attr}`; warm start from a {args.source_trials}-trial search on `{args.source_attr}` "
        f"(data seed {args.source_data_seed}; {result['warm_points']} evaluated points given to TPE). {args.trials} trials "
        f"of up to {args.epochs} epochs per search, {args.n_samples} images, objective val `{objective}`; target = the "
        f"cold searches' median final best, {target:.4f}; mean ± sd over {args.seeds} seed(s).",
        "",
        "| search | reached target | epochs to target (of those that did) | final best val objective | epochs spent | wall s |",
        "|---|---|---|---|---|---|",
        *[f"| {kind} | {result[f'{kind}_epochs_to_target']['n']}/{args.seeds} | {ms(f'{kind}_epochs_to_target', 1)} | "
          f"{ms(f'{kind}_final_best')} | {ms(f'{kind}_epochs', 1)} | {ms(f'{kind}_fit_s', 0)} |" for kind in ("cold", "warm")],
    ])
    emit(result, table)


if __name__ == "__main__":
    main()
