"""Benchmark: wall time per no-op trial through the project's tuner versus raw Ray Tune.

A no-op trainable reports ``--reports`` epochs (a made-up objective from the config, no training),
so the wall time is Ray Tune's per-trial overhead: proposing a configuration, starting the trial
actor, result handling, ASHA and the searcher. Variants, each a fresh study of ``--trials``
trials on the same search space (FairTune mask bits + lr of the default config) with
``max_concurrent 2`` and 1 CPU per trial, run one after the other in one Ray instance, in ABBA
order (raw, project, project + reuse, raw + reuse) so that a drift of the load favours neither side:

* raw Ray Tune: ``HyperOptSearch`` in a ``ConcurrencyLimiter`` + ``ASHAScheduler`` built by hand;
* the project: ``fairtune_ray.search.tuner.build_tuner`` (same searcher/scheduler settings, plus
  its progress reporter, failure config and the trial-status callback of ``fairtune-ray search``);
* each of the two again with ``reuse_actors=True`` (one trial actor serves many trials).

    .venv/bin/python benchmarks/bench_trial_overhead.py [--quick] [--trials 50] [--reports 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, env_info, init_local_ray, make_noop, quiet_stdout  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def raw_tuner(cfg, trainable, space, points, storage, name, reuse: bool):
    """The same study built directly from Ray Tune's classes, nothing of the project's tuner."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.hyperopt import HyperOptSearch

    searcher = ConcurrencyLimiter(HyperOptSearch(points_to_evaluate=points, n_initial_points=cfg.search.n_initial_points,
                                                 random_state_seed=cfg.search.seed), max_concurrent=cfg.search.max_concurrent)
    scheduler = ASHAScheduler(time_attr="epoch", max_t=cfg.train.epochs, grace_period=cfg.search.asha.grace_period,
                              reduction_factor=cfg.search.asha.reduction_factor)
    return tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space=space,
                      tune_config=tune.TuneConfig(metric="objective", mode="max", search_alg=searcher, scheduler=scheduler,
                                                  num_samples=cfg.search.num_samples, reuse_actors=reuse),
                      run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke test (6 trials per variant)")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--reports", type=int, default=4, help="epochs each no-op trial reports (ASHA max_t)")
    args = ap.parse_args()
    trials = args.trials or (6 if args.quick else 50)

    results = {}
    with quiet_stdout(), tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        import ray

        from fairtune_ray.config import load_config
        from fairtune_ray.search.callbacks import TrialStatusCallback
        from fairtune_ray.search.preflight import preflight
        from fairtune_ray.search.space import build_param_space, initial_points
        from fairtune_ray.search.tuner import build_tuner

        cfg = load_config(None, overrides={"search.num_samples": trials, "search.max_concurrent": 2,
                                           "train.epochs": args.reports, "trial.resources.cpu": 1})
        n_bits = preflight(cfg).n_bits
        space, points = build_param_space(cfg, n_bits), initial_points(cfg, n_bits)
        trainable = make_noop(args.reports)
        init_local_ray(2)
        # ABBA order: a slow drift of the machine's load does not favour one side of both pairs.
        variants = [("raw", False), ("project", False), ("project", True), ("raw", True)]
        for kind, reuse in variants:
            name = f"{kind}-reuse{int(reuse)}"
            if kind == "raw":
                tuner = raw_tuner(cfg, trainable, space, points, tmp, name, reuse)
            else:
                tuner = build_tuner(cfg, trainable, space, points, tmp, name, [TrialStatusCallback(args.reports)],
                                    reuse_actors=reuse)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            grid = tuner.fit()
            wall = time.perf_counter() - t0
            results[name] = {"wall_s": round(wall, 2), "per_trial_s": round(wall / trials, 3),
                             "trials": len(grid), "errors": grid.num_errors, "load_before": round(load, 2)}
            print(name, results[name], file=sys.stderr)
        ray.shutdown()

    r = results
    result = {"bench": "trial_overhead", "quick": args.quick, "trials": trials, "reports_per_trial": args.reports,
              "search_dims": len(space), "max_concurrent": 2, "variants": r,
              "project_vs_raw": round(r["project-reuse0"]["per_trial_s"] / r["raw-reuse0"]["per_trial_s"], 3),
              "reuse_speedup_raw": round(r["raw-reuse0"]["per_trial_s"] / r["raw-reuse1"]["per_trial_s"], 2),
              "reuse_speedup_project": round(r["project-reuse0"]["per_trial_s"] / r["project-reuse1"]["per_trial_s"], 2),
              **env_info()}
    lines = [f"{trials} no-op trials per variant ({args.reports} reports each), TPE over {len(space)} dimensions, "
             "ASHA, 2 concurrent, 1 CPU per trial.", "",
             "| variant | wall s | s per trial | vs raw Ray Tune (same actor setting) |", "|---|---|---|---|"]
    for kind, reuse in (("raw", False), ("project", False), ("raw", True), ("project", True)):
        v = r[f"{kind}-reuse{int(reuse)}"]
        ref = r[f"raw-reuse{int(reuse)}"]
        label = ("raw Ray Tune" if kind == "raw" else "project `build_tuner`") + (", reuse_actors=True" if reuse else "")
        lines.append(f"| {label} | {v['wall_s']:.1f} | {v['per_trial_s']:.3f} | {v['per_trial_s'] / ref['per_trial_s']:.2f} |")
    lines += ["", f"Actor reuse: {result['reuse_speedup_raw']:.1f}x fewer seconds per trial on raw Ray Tune, "
                  f"{result['reuse_speedup_project']:.1f}x through the project's tuner."]
    emit(result, "\n".join(lines))


if __name__ == "__main__":
    main()
