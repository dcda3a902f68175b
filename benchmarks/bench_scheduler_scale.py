"""Benchmark: the search driver's cost per trial over a study of 1,000 trials with no work.

Two views of the same question, whether the driver gets slower per trial as the study grows:

1. Simulated: the project's own searcher and scheduler (``fairtune_ray.search.tuner.make_searcher``
   / ``make_scheduler``: seeded HyperOpt TPE in a ConcurrencyLimiter of 2, fitted on at most
   ``search.tpe_window`` finished trials, ASHA on the epoch) are
   driven directly, with the same calls in the same order as Ray Tune's ``TuneController`` makes
   them (suggest, ``on_trial_add``, one ``on_trial_result`` per epoch to the scheduler and the
   searcher, ``on_trial_complete`` on a stop), on the default config's search space (mask bits +
   lr), with a made-up objective. This times TPE and ASHA separately, without Ray's noise. The same
   study runs again with ``tpe_window: null`` (TPE on every past trial, HyperOpt's own behaviour), and
   both report the best objective their fully trained trials reached, so the window's saving is set
   against what it costs the search.
2. Ray: the same study through the project's ``build_tuner`` on a local Ray instance, with a
   no-op trainable and ``reuse_actors=True`` (a new process per trial would cost about 1.5 s on 2
   cores, see bench_trial_overhead, and hide the driver). This adds what the simulation leaves
   out: Tune's controller, result handling, the trial-status callback and Tune's experiment-state
   snapshots. Seconds per trial are read from the trials' start times.

Reported for trials 1-100, 401-500 and 901-1000 of the study, i.e. "at 100 / 500 / 1000".

    .venv/bin/python benchmarks/bench_scheduler_scale.py [--quick] [--trials 1000] [--no-ray]
"""
from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, env_info, init_local_ray, make_noop, quiet_stdout  # noqa: E402


def objective(config: dict, epoch: int, rng: random.Random) -> float:
    bits = sum(v for k, v in config.items() if k.startswith("m"))
    return -abs(math.log10(config["lr"]) + 3.5) + 0.01 * bits + 0.02 * epoch + rng.gauss(0, 0.02)


def simulate(cfg, space: dict, points: list[dict], n_trials: int, seed: int = 0) -> list[dict]:
    """Drive searcher + scheduler for ``n_trials``; return per-trial driver seconds, in start order."""
    import numpy as np
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher

    from fairtune_ray.search.tuner import TUNE_METRIC, make_scheduler, make_searcher

    np.random.seed(seed)  # ASHA picks brackets with numpy's global RNG
    rng = random.Random(seed)
    searcher = make_searcher(cfg, points)
    searcher.set_search_properties(TUNE_METRIC, "max", space)
    scheduler = make_scheduler(cfg)
    scheduler.set_search_properties(TUNE_METRIC, "max")
    max_t = cfg.train.epochs
    trials: list[dict] = []
    running: dict[str, dict] = {}
    started = done = 0
    while done < n_trials:
        while len(running) < cfg.search.max_concurrent and started < n_trials:
            tid = f"t{started:05d}"
            t0 = time.perf_counter()
            config = searcher.suggest(tid)
            t1 = time.perf_counter()
            if config is None or config == Searcher.FINISHED:
                break
            trial = SimpleNamespace(trial_id=tid, config=config)
            scheduler.on_trial_add(None, trial)
            t2 = time.perf_counter()
            rec = {"trial": trial, "epoch": 0, "search_s": t1 - t0, "sched_s": t2 - t1}
            running[tid] = rec
            trials.append(rec)
            started += 1
        for tid in list(running):  # every running trial reports its next epoch
            rec = running[tid]
            rec["epoch"] += 1
            result = {"epoch": rec["epoch"], "training_iteration": rec["epoch"], "trial_id": tid,
                      TUNE_METRIC: objective(rec["trial"].config, rec["epoch"], rng)}
            t0 = time.perf_counter()
            decision = scheduler.on_trial_result(None, rec["trial"], result)
            t1 = time.perf_counter()
            if decision != TrialScheduler.STOP:
                searcher.on_trial_result(tid, result)
            t2 = time.perf_counter()
            rec["sched_s"] += t1 - t0
            rec["search_s"] += t2 - t1
            if decision == TrialScheduler.STOP or rec["epoch"] >= max_t:
                t0 = time.perf_counter()
                scheduler.on_trial_complete(None, rec["trial"], result)
                t1 = time.perf_counter()
                searcher.on_trial_complete(tid, result)
                t2 = time.perf_counter()
                rec["sched_s"] += t1 - t0
                rec["search_s"] += t2 - t1
                del running[tid]
                done += 1
            rec["last"] = result[TUNE_METRIC]
    return [{"search_s": r["search_s"], "sched_s": r["sched_s"], "epochs": r["epoch"], "last": r.get("last")}
            for r in trials]


def best_full(per_trial: list[dict], max_t: int) -> float:
    """The best objective a trial reached at its last epoch, among those trained to ``max_t``."""
    return max(p["last"] for p in per_trial if p["epochs"] >= max_t)


def run_with_ray(cfg, space: dict, points: list[dict], n_trials: int, epochs: int) -> tuple[list[float], list[float]]:
    """The study through the project's tuner on local Ray. Returns each trial's start time (s) and
    the seconds HyperOpt's ``suggest`` took for each trial inside that run (timed in the driver)."""
    import tempfile

    from ray import tune
    from ray.tune.search.hyperopt import HyperOptSearch

    from fairtune_ray.search.callbacks import TrialStatusCallback
    from fairtune_ray.search.tuner import build_tuner

    class StartTimes(tune.Callback):
        def __init__(self):
            self.t0, self.starts = time.perf_counter(), []

        def on_trial_start(self, iteration, trials, trial, **info):
            self.starts.append(time.perf_counter() - self.t0)

    suggest_s: list[float] = []
    original = HyperOptSearch.suggest

    def timed_suggest(self, trial_id):  # the driver calls it in-process: time it where Tune runs it
        t0 = time.perf_counter()
        config = original(self, trial_id)
        if config is not None:
            suggest_s.append(time.perf_counter() - t0)
        return config

    starts = StartTimes()
    init_local_ray(2)
    HyperOptSearch.suggest = timed_suggest
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            tuner = build_tuner(cfg, make_noop(epochs), space, points, tmp, "scale",
                                [TrialStatusCallback(epochs), starts], reuse_actors=True, verbose=0)
            grid = tuner.fit()
            if grid.num_errors:
                raise RuntimeError(f"{grid.num_errors} no-op trials failed")
    finally:
        HyperOptSearch.suggest = original
    return starts.starts, suggest_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke test (60 trials)")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=4, help="ASHA max_t (epochs of a full trial)")
    ap.add_argument("--no-ray", action="store_true", help="only the simulated driver (no Ray run)")
    args = ap.parse_args()
    n = args.trials or (60 if args.quick else 1000)
    window = max(1, n // 10)
    marks = sorted({max(window, round(n * f)) for f in (0.1, 0.5, 1.0)})

    with quiet_stdout():
        from fairtune_ray.config import load_config
        from fairtune_ray.search.preflight import preflight
        from fairtune_ray.search.space import build_param_space, initial_points

        cfg = load_config(None, overrides={"search.num_samples": n, "search.max_concurrent": 2, "train.epochs": args.epochs})
        n_bits = preflight(cfg).n_bits
        space, points = build_param_space(cfg, n_bits), initial_points(cfg, n_bits)
        t0 = time.perf_counter()
        per_trial = simulate(cfg, space, points, n)
        total = time.perf_counter() - t0
        full_history = simulate(cfg.model_copy(update={"search": cfg.search.model_copy(update={"tpe_window": None})}),
                                space, points, n)
        ray_starts, ray_total = None, None
        if not args.no_ray:
            t0 = time.perf_counter()
            cfg_ray = load_config(None, overrides={"search.num_samples": n, "search.max_concurrent": 2,
                                                   "train.epochs": args.epochs, "trial.resources.cpu": 1})
            ray_starts, ray_suggest = run_with_ray(cfg_ray, space, points, n, args.epochs)
            ray_total = time.perf_counter() - t0

    def at(mark: int, key: str) -> float:
        part = per_trial[mark - window: mark]
        return statistics.fmean(p[key] for p in part)

    rows = [{"at_trial": m, "window": f"{m - window + 1}-{m}", "searcher_ms": 1e3 * at(m, "search_s"),
             "scheduler_ms": 1e3 * at(m, "sched_s"),
             "searcher_full_ms": 1e3 * statistics.fmean(p["search_s"] for p in full_history[m - window: m])}
            for m in marks]
    for r in rows:
        r["driver_ms"] = r["searcher_ms"] + r["scheduler_ms"]
        if ray_starts is not None and len(ray_starts) >= r["at_trial"]:
            # wall time between trial starts; the first window starts after the two cold actor starts
            hi = r["at_trial"] - 1
            lo = hi - window if r["at_trial"] > window else 1
            r["ray_ms"] = 1e3 * (ray_starts[hi] - ray_starts[lo]) / (hi - lo)
            r["ray_tpe_ms"] = 1e3 * statistics.fmean(ray_suggest[lo + 1: hi + 1])  # the same trials' suggest calls
    first, last = rows[0], rows[-1]
    result = {"bench": "scheduler_scale", "quick": args.quick, "mode": "searcher+scheduler driven directly" + ("" if args.no_ray else ", then through Ray Tune"),
              "trials": n, "search_dims": len(space), "max_concurrent": 2, "asha_max_t": args.epochs,
              "epochs_trained": sum(p["epochs"] for p in per_trial), "total_s": round(total, 2),
              "rows": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
              "growth_driver_last_vs_first": round(last["driver_ms"] / first["driver_ms"], 2),
              "growth_scheduler_last_vs_first": round(last["scheduler_ms"] / first["scheduler_ms"], 2),
              "growth_searcher_last_vs_first": round(last["searcher_ms"] / first["searcher_ms"], 2),
              "tpe_window": cfg.search.tpe_window,
              "growth_searcher_full_last_vs_first": round(last["searcher_full_ms"] / first["searcher_full_ms"], 2),
              "best_objective": round(best_full(per_trial, args.epochs), 4),
              "best_objective_full_history": round(best_full(full_history, args.epochs), 4),
              **env_info(1)}
    if ray_starts is not None:
        result.update({"ray_trials_started": len(ray_starts), "ray_total_s": round(ray_total, 2),
                       "growth_ray_last_vs_first": round(last["ray_ms"] / first["ray_ms"], 2),
                       "growth_ray_tpe_last_vs_first": round(last["ray_tpe_ms"] / first["ray_tpe_ms"], 2)})
    lines = [f"{n} simulated trials, TPE over {len(space)} dimensions + ASHA (max_t {args.epochs}), 2 in flight; "
             f"{result['epochs_trained']} epoch reports in all; driver total {total:.1f} s with searcher and scheduler "
             "driven directly" + ("" if ray_starts is None else "; the last column is the same study through Ray Tune "
                                  "(`build_tuner`, no-op trainable, reuse_actors=True)") + ".", "",
             f"| trials | searcher (TPE, window {cfg.search.tpe_window}) ms/trial | TPE on every past trial ms/trial "
             "| scheduler (ASHA) ms/trial | driver ms/trial | Ray Tune wall ms/trial | of which TPE suggest ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ray_ms = f"{r['ray_ms']:.0f} | {r['ray_tpe_ms']:.0f}" if "ray_ms" in r else "not run | not run"
        lines.append(f"| {r['window']} | {r['searcher_ms']:.2f} | {r['searcher_full_ms']:.2f} | {r['scheduler_ms']:.3f} "
                     f"| {r['driver_ms']:.2f} | {ray_ms} |")
    lines += ["", f"Growth from the first to the last window: driver {result['growth_driver_last_vs_first']:.1f}x "
                  f"(TPE {result['growth_searcher_last_vs_first']:.1f}x, on every past trial "
                  f"{result['growth_searcher_full_last_vs_first']:.1f}x, ASHA {result['growth_scheduler_last_vs_first']:.1f}x); "
                  f"best objective of a fully trained trial {result['best_objective']:.3f} with the window, "
                  f"{result['best_objective_full_history']:.3f} on every past trial"
              + (f"; Ray Tune wall time per trial {result['growth_ray_last_vs_first']:.1f}x ({n} no-op trials through "
                 f"`build_tuner` with reuse_actors=True in {ray_total:.0f} s)." if ray_starts is not None else ".")]
    emit(result, "\n".join(lines))


if __name__ == "__main__":
    main()
