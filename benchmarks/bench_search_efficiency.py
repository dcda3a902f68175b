"""Benchmark (headline): search efficiency at an equal budget of training epochs.

On the synthetic benchmark, two searches over the same space (FairTune mask bits + learning rate),
with the same trainable (``fairtune_ray.search.trial.run_trial``: the project's inner loop, MLflow
child runs in a temporary SQLite store) and the same seeded HyperOpt TPE, stop after the same
total number of training epochs:

(a) FairTune-style: sequential TPE (``max_concurrent: 1``), every trial trained for all epochs
    (FIFO scheduler, no early stopping), each trial scored by its LAST epoch's validation
    objective. Being alone on the machine, each trial gets both cores (2 torch threads).
(b) this project: TPE + ASHA on the epoch + 2 concurrent trials of 1 core each, each trial
    scored by its best epoch (what ``fairtune-ray search`` selects on).

Both run through ``fairtune_ray.search.tuner.build_tuner`` ((a) with ``scheduler=FIFOScheduler()``);
an epoch-budget stopper ends each search when the budget is spent. Reported per search seed:
best validation objective versus cumulative epochs (a PNG next to RESULTS.md), wall time to spend
the budget, the fraction of (a)'s budget after which (b)'s best already matches (a)'s final best,
and the test worst-group AUC of each search's winner, chosen as ``fairtune-ray search`` chooses it
(the confirmation stage: the top ``search.confirm.top_k`` trials trained again with
``search.confirm.seeds`` seeds, best validation seed mean; outside the epoch budget, the same for
both searches), retrained once from the pre-trained weights (the project's ``retrain_candidates``,
seed = search seed, weights of the best validation epoch) and compared on the same test resamples
(paired 95% interval of (b) - (a)). ASHA's grace period is the default, one epoch past the lr
warm-up (2 of 4 epochs), so no trial is cut while its lr still ramps up.

    .venv/bin/python benchmarks/bench_search_efficiency.py [--quick] [--seeds 5] [--budget 24] [--epochs 4]

The default budget (24 epochs = 6 full trials of 4 epochs) and 5 seeds keep the full run near 10
minutes on 2 cores; ``--budget 40`` gives a longer study.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BENCH_SETTINGS, emit, env_info, init_local_ray, mean_sd, quiet_stdout  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def epoch_budget(budget: int):
    """A Tune stopper that ends the whole search once ``budget`` epochs (reports) have been trained."""
    from ray import tune

    class EpochBudget(tune.Stopper):
        def __init__(self):
            self.seen: set = set()

        def __call__(self, trial_id: str, result: dict) -> bool:
            # A finished function trial's last result arrives twice (the second marked done):
            # count distinct (trial, epoch) pairs.
            if "epoch" in result:
                self.seen.add((trial_id, int(result["epoch"])))
            return False

        def stop_all(self) -> bool:
            return len(self.seen) >= budget

    return EpochBudget()


def make_recorder():
    from ray import tune

    class Recorder(tune.Callback):
        """Every epoch report, in the order the driver saw them, with the driver's clock."""

        def __init__(self):
            self.rows: list[dict] = []
            self.starts: dict[str, float] = {}
            self.t0 = time.perf_counter()

        def on_trial_start(self, iteration, trials, trial, **info):
            self.starts[trial.trial_id] = time.perf_counter() - self.t0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.rows.append({"t": time.perf_counter() - self.t0, "trial": trial.trial_id,
                              "epoch": int(result["epoch"]), "objective": float(result["objective"]),
                              "config": dict(trial.config),
                              "metrics": {k[4:]: v for k, v in result.items() if isinstance(k, str) and k.startswith("val/")}})

    return Recorder()


def base_overrides(args, seed: int, cache_dir: str, tmp: str) -> dict:
    o = {
        **BENCH_SETTINGS,
        "data.synthetic.n_samples": args.n_samples,
        "data.cache_dir": cache_dir,
        "train.epochs": args.epochs,
        "train.seed": seed,
        "search.seed": seed,
        "search.storage": os.path.join(tmp, "runs"),
        "search.retrain_seeds": 1,
        "search.bootstrap": 200,
        "search.confirm.top_k": 2,  # the search's confirmation stage, smaller than its default 3 x 3 to fit make bench
        "search.confirm.seeds": 2,
        "tracking.uri": f"sqlite:///{os.path.join(tmp, 'mlruns.db')}",
    }
    if args.quick:
        o.update({"data.synthetic.source_samples": 400, "backbone.pretrain_epochs": 1, "data.batch_size": 64})
    return o


def run_one_search(kind: str, cfg, data, checkpoint: str, seed: int, budget: int) -> dict:
    """Run search ``kind`` ('a' FairTune-style, 'b' project) until ``budget`` epochs are spent."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from fairtune_ray.search.callbacks import TrialStatusCallback
    from fairtune_ray.search.preflight import preflight
    from fairtune_ray.search.space import build_param_space, initial_points
    from fairtune_ray.search.trial import run_trial
    from fairtune_ray.search.tuner import build_tuner
    from fairtune_ray.tracking import finish_child_runs, start_parent_run

    space = preflight(cfg)
    n_bits = space.n_bits
    name = f"bench-{kind}-seed{seed}-{int(time.time() * 1000) % 10**8}"
    parent = start_parent_run(cfg.tracking.uri, "bench-search-efficiency", name, params={"kind": kind, "seed": seed})
    tracking = {"uri": cfg.tracking.uri, "parent_run_id": parent, "method": cfg.search.method}
    trainable = tune.with_parameters(run_trial, cfg_dict=cfg.model_dump(), data=data, checkpoint=checkpoint,
                                     space_name=cfg.mask.space, n_bits=n_bits, tracking=tracking)
    recorder, status = make_recorder(), TrialStatusCallback(cfg.train.epochs)
    tuner = build_tuner(cfg, trainable, build_param_space(cfg, n_bits), initial_points(cfg, n_bits),
                        str(Path(cfg.search.storage).resolve()), name, [recorder, status],
                        scheduler=FIFOScheduler() if kind == "a" else None, stop=epoch_budget(budget), verbose=0)
    t0 = time.perf_counter()
    recorder.t0 = t0
    grid = tuner.fit()
    fit_s = time.perf_counter() - t0
    failed = [st for st in status.statuses.values() if st[0] == "failed"]
    for res in grid:
        if res.error is not None:
            print(f"search {kind} seed {seed}: a trial failed: {str(res.error)[-2000:]}", file=sys.stderr)
    finish_child_runs(cfg.tracking.uri, parent, status.statuses)
    rows = recorder.rows[:budget]  # a concurrent trial may report once more after the stop: not counted
    first: dict[str, float] = {}
    epoch_s: list[float] = []
    last: dict[str, float] = {}
    for r in recorder.rows:
        if r["trial"] in last:
            epoch_s.append(r["t"] - last[r["trial"]])
        first.setdefault(r["trial"], r["t"])
        last[r["trial"]] = r["t"]
    first_report = [first[t] - recorder.starts[t] for t in first if t in recorder.starts]
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    return {"rows": rows, "fit_s": fit_s, "budget_s": rows[-1]["t"] if rows else float("nan"), "n_bits": n_bits,
            # start of a trial (Tune's on_trial_start) to its first epoch report, and epoch to epoch:
            "first_report_s": med(first_report), "epoch_s": med(epoch_s),
            "n_trials": len({r["trial"] for r in rows}), "failed": len(failed), "trials_started": len(grid)}


def first_reach(curve: list[float], target: float, sign: float):
    """The first cumulative epoch (1-based) at which ``curve`` is at least as good as ``target``; None if never."""
    return next((i + 1 for i, v in enumerate(curve) if not math.isnan(v) and sign * v >= sign * target), None)


def best_curve(rows: list[dict], sign: float, last_epoch_only: int = 0) -> list[float]:
    """Best objective seen after each cumulative epoch (NaN until one exists).

    ``last_epoch_only=E``: a trial counts only when it reports epoch E (FairTune's reading).
    """
    out, best = [], float("nan")
    for r in rows:
        v = r["objective"]
        if (not last_epoch_only or r["epoch"] == last_epoch_only) and not math.isnan(v):
            if math.isnan(best) or sign * v > sign * best:
                best = v
        out.append(best)
    return out


def confirmed_winner(cfg, rows: list[dict], sign: float, data, checkpoint, n_bits: int, last_epoch_only: int = 0) -> dict:
    """What ``fairtune-ray search`` retrains: the ``search.confirm.top_k`` best trials (each read as the
    search reads it: its last epoch in (a), its best in (b)) trained again with ``search.confirm.seeds``
    seeds on train and scored on validation; the best seed mean wins. Outside the epoch budget, as the
    search's confirmation stage is, and the same for both searches."""
    from fairtune_ray.metrics import parse_objective
    from fairtune_ray.search.stages.confirm import confirmed_trial, top_trials
    from fairtune_ray.search.space import spec_from_trial_config
    from fairtune_ray.search.validation_fits import run_validation_fits

    per_trial: dict[str, dict] = {}
    for r in rows:
        if (last_epoch_only and r["epoch"] != last_epoch_only) or math.isnan(r["objective"]):
            continue
        best = per_trial.get(r["trial"])
        if best is None or sign * r["objective"] > sign * best["objective"]:
            per_trial[r["trial"]] = {"trial_id": r["trial"], "config": r["config"], "objective": r["objective"]}
    objective = parse_objective(cfg.train.objective)
    top = top_trials(list(per_trial.values()), objective, cfg.search.confirm.top_k)
    if not top:
        raise RuntimeError("no trial produced a defined objective within the budget")
    seeds = [cfg.train.seed + i for i in range(cfg.search.confirm.seeds)]
    specs = {(t["trial_id"], s): spec_from_trial_config(t["config"], cfg, cfg.mask.space, n_bits, seed=s)
             for t in top for s in seeds}
    fits = run_validation_fits(cfg, specs, data, checkpoint)
    confirmed = [confirmed_trial(t, [fits[(t["trial_id"], s)] for s in seeds], objective, "mean") for t in top]
    return max(confirmed, key=lambda c: sign * c["objective"] if not math.isnan(c["objective"]) else -math.inf)


def plot(curves_a: list[list[float]], curves_b: list[list[float]], budget: int, objective: str, path: Path,
         concurrent: int = 2) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    x = np.arange(1, budget + 1)
    for curves, colour, label in ((curves_a, "tab:orange", "(a) FairTune-style: sequential TPE, full epochs, last epoch"),
                                  (curves_b, "tab:blue", f"(b) this project: TPE + ASHA, {concurrent} concurrent")):
        arr = np.full((len(curves), budget), np.nan)
        for i, c in enumerate(curves):
            arr[i, :len(c)] = c
            if len(c) < budget and len(c):
                arr[i, len(c):] = c[-1]
            ax.plot(x, arr[i], color=colour, alpha=0.3, lw=1)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax.plot(x, np.nanmean(arr, axis=0), color=colour, lw=2.2, label=label + f" (mean of {len(curves)})")
    ax.set_xlabel("cumulative training epochs (all trials)")
    ax.set_ylabel(f"best validation {objective} so far")
    ax.set_title("Search efficiency at an equal epoch budget (synthetic benchmark)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke test (1 seed, 4-epoch budget, 300 images)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--budget", type=int, default=None, help="total training epochs per search (default 6 full trials)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of a full trial")
    ap.add_argument("--n-samples", type=int, default=None)
    ap.add_argument("--cache-dir", default=str(REPO / ".fairtune_cache"))
    ap.add_argument("--plot", default=None, help="PNG path (default: benchmarks/search_efficiency.png; none with --quick)")
    ap.add_argument("--set", dest="b_set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for (b) only, read as YAML, e.g. search.asha.grace_period=1 (a variant "
                         "study, reported in the JSON and the table; repeatable)")
    args = ap.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 5)
    args.epochs = args.epochs or (2 if args.quick else 4)
    args.budget = args.budget or (2 * args.epochs if args.quick else 6 * args.epochs)
    args.n_samples = args.n_samples or (300 if args.quick else 1000)
    plot_path = Path(args.plot) if args.plot else (None if args.quick else HERE / "search_efficiency.png")

    per_seed = []
    t_start = time.perf_counter()
    with quiet_stdout(), tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        import ray

        from fairtune_ray.cli.common import parse_overrides
        from fairtune_ray.config import load_config
        from fairtune_ray.data.loading import load_dataset
        from fairtune_ray.metrics import paired_differences, parse_objective
        from fairtune_ray.search.results import Role
        from fairtune_ray.search.stages.retrain_test import retrain_candidates
        from fairtune_ray.search.stages.types import Candidate
        from fairtune_ray.search.space import spec_from_trial_config
        from fairtune_ray.training.pretrain import resolve_checkpoint

        b_set = parse_overrides(args.b_set)
        init_local_ray(2)
        for seed in range(args.seeds):
            over = base_overrides(args, seed, args.cache_dir, tmp)
            cfg_a = load_config(None, overrides={**over, "search.num_samples": args.budget // args.epochs,
                                                 "search.max_concurrent": 1, "trial.resources.cpu": 2})
            cfg_b = load_config(None, overrides={**over, "search.num_samples": args.budget,
                                                 "search.max_concurrent": 2, "trial.resources.cpu": 1, **b_set})
            data = load_dataset(cfg_b.data)
            # The default pre-training of the micro backbone (source task, 10 epochs) runs once per
            # config and is cached under --cache-dir; it is not part of any timing.
            checkpoint = str(Path(resolve_checkpoint(cfg_b, log=lambda *a: print(*a, file=sys.stderr))).resolve())
            objective = parse_objective(cfg_b.train.objective)
            sign = objective.sign
            a = run_one_search("a", cfg_a, data, checkpoint, seed, args.budget)
            b = run_one_search("b", cfg_b, data, checkpoint, seed, args.budget)
            curve_a = best_curve(a["rows"], sign, last_epoch_only=args.epochs)
            curve_a_best_epoch = best_curve(a["rows"], sign)
            curve_b = best_curve(b["rows"], sign)
            final_a = curve_a[-1]
            reach = first_reach(curve_b, final_a, sign)
            # the same question with (a) read as (b) is, at each trial's best epoch (a stricter bar for (b))
            reach_any = first_reach(curve_b, curve_a_best_epoch[-1], sign)
            n_bits = a["n_bits"]
            t0 = time.perf_counter()
            win_a = confirmed_winner(cfg_b, a["rows"], sign, data, checkpoint, n_bits, last_epoch_only=args.epochs)
            win_b = confirmed_winner(cfg_b, b["rows"], sign, data, checkpoint, n_bits)
            confirm_s = time.perf_counter() - t0
            spec_a = spec_from_trial_config(win_a["config"], cfg_b, cfg_b.mask.space, n_bits, seed=seed)
            spec_b = spec_from_trial_config(win_b["config"], cfg_b, cfg_b.mask.space, n_bits, seed=seed)
            group_names = data.info.attributes[cfg_b.data.sensitive_attribute]
            t0 = time.perf_counter()
            rows = retrain_candidates(cfg_b, [Candidate("a", Role.SELECTED, spec_a), Candidate("b", Role.SELECTED, spec_b)],
                                      data, checkpoint, group_names, log=lambda *x: print(*x, file=sys.stderr))
            retrain_s = time.perf_counter() - t0
            test = {r.method: r for r in rows}
            # (b)'s retrained winner minus (a)'s, on the same test resamples: the paired interval
            paired = paired_differences(test["b"].scores.labels, test["b"].scores.scores, test["a"].scores.scores,
                                        test["b"].scores.groups, ["min_auc"], n_boot=cfg_b.search.bootstrap,
                                        seed=seed, group_names=group_names)["min_auc"]
            stopped = sum(1 for t in {r["trial"] for r in b["rows"]}
                          if max(r["epoch"] for r in b["rows"] if r["trial"] == t) < args.epochs)
            per_seed.append({
                "seed": seed, "a_trials": a["n_trials"], "b_trials": b["n_trials"], "b_stopped_early": stopped,
                "a_budget_s": a["budget_s"], "b_budget_s": b["budget_s"], "a_fit_s": a["fit_s"], "b_fit_s": b["fit_s"],
                "a_best_val": final_a, "a_best_val_any_epoch": curve_a_best_epoch[-1], "b_best_val": curve_b[-1],
                "a_frac_budget_to_own_best": (curve_a.index(final_a) + 1) / args.budget,  # when (a) itself got there
                "b_epochs_to_reach_a": reach, "b_frac_budget_to_reach_a": (reach / args.budget) if reach else None,
                "b_frac_budget_to_reach_a_any_epoch": (reach_any / args.budget) if reach_any else None,
                "b_s_to_reach_a": b["rows"][reach - 1]["t"] if reach else None,
                "a_winner": spec_a.mask + f" lr={spec_a.lr:.2e}", "b_winner": spec_b.mask + f" lr={spec_b.lr:.2e}",
                "a_test_min_auc": test["a"].metric("min_auc"), "b_test_min_auc": test["b"].metric("min_auc"),
                "a_test_overall_auc": test["a"].metric("overall_auc"), "b_test_overall_auc": test["b"].metric("overall_auc"),
                "b_minus_a_test_min_auc": paired.diff, "b_minus_a_lo": paired.lo, "b_minus_a_hi": paired.hi,
                "b_vs_a_verdict": paired.verdict, "a_confirmed_val": win_a["objective"], "b_confirmed_val": win_b["objective"],
                "confirm_s": confirm_s, "retrain_s": retrain_s, "a_first_report_s": a["first_report_s"], "a_epoch_s": a["epoch_s"],
                "b_first_report_s": b["first_report_s"], "b_epoch_s": b["epoch_s"],
                "curve_a": curve_a, "curve_b": curve_b,
            })
            print(f"seed {seed}: {per_seed[-1]}", file=sys.stderr)
        ray.shutdown()
        if plot_path is not None:
            plot([s["curve_a"] for s in per_seed], [s["curve_b"] for s in per_seed], args.budget,
                 objective.name, plot_path, concurrent=cfg_b.search.max_concurrent)

    def agg(key):
        m, s = mean_sd([p[key] for p in per_seed])
        return {"mean": round(m, 4), "sd": round(s, 4)}

    def over_seeds_reached(key):
        """Mean and sd over the seeds in which (b) reached the bar, and how many did."""
        reached = [p[key] for p in per_seed if p[key] is not None]
        m, s = mean_sd(reached) if reached else (None, None)
        return {"mean": round(m, 4) if reached else None, "sd": round(s, 4) if reached else None,
                "reached": f"{len(reached)}/{len(per_seed)}"}

    keys = ["a_trials", "b_trials", "b_stopped_early", "a_budget_s", "b_budget_s", "a_best_val", "a_best_val_any_epoch",
            "b_best_val", "a_test_min_auc", "b_test_min_auc", "a_test_overall_auc", "b_test_overall_auc",
            "a_confirmed_val", "b_confirmed_val", "a_frac_budget_to_own_best", "b_minus_a_test_min_auc", "confirm_s", "retrain_s",
            "a_first_report_s", "a_epoch_s", "b_first_report_s", "b_epoch_s"]
    result = {"bench": "search_efficiency", "quick": args.quick, "seeds": args.seeds, "budget_epochs": args.budget,
              "epochs_per_trial": args.epochs, "n_samples": args.n_samples, "objective": objective.name,
              "b_overrides": b_set, "b_grace_period": cfg_b.search.asha.grace_period,
              "b_reduction_factor": cfg_b.search.asha.reduction_factor,
              **{k: agg(k) for k in keys},
              "b_frac_budget_to_reach_a": over_seeds_reached("b_frac_budget_to_reach_a"),
              "b_frac_budget_to_reach_a_any_epoch": over_seeds_reached("b_frac_budget_to_reach_a_any_epoch"),
              "b_not_worse_on_test": f"{sum(p['b_vs_a_verdict'] != 'worse' for p in per_seed)}/{len(per_seed)}",
              "wall_ratio_a_over_b": round(mean_sd([p["a_budget_s"] / p["b_budget_s"] for p in per_seed])[0], 3),
              "plot": str(plot_path.relative_to(REPO)) if plot_path and plot_path.is_relative_to(REPO) else (str(plot_path) if plot_path else None),
              "per_seed": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items() if not k.startswith("curve")}
                           for p in per_seed],
              "total_s": round(time.perf_counter() - t_start, 1), **env_info()}

    def ms(key, digits=3):
        d = result[key]
        return f"{d['mean']:.{digits}f} ± {d['sd']:.{digits}f}"

    fr, strict = result["b_frac_budget_to_reach_a"], result["b_frac_budget_to_reach_a_any_epoch"]
    table = "\n".join([
        f"Budget {args.budget} training epochs per search ({args.epochs} per full trial), {args.n_samples} images, "
        f"objective val `{objective.name}`; mean ± sd over {args.seeds} search seed(s). (b): ASHA grace period "
        f"{cfg_b.search.asha.grace_period} epoch(s), reduction factor {cfg_b.search.asha.reduction_factor:g}"
        + (f"; variant with {', '.join(f'`{k}={v}`' for k, v in b_set.items())}" if b_set else "") + ".",
        "",
        "| search | trials in budget | wall s to spend budget | best val objective | test worst-group AUC (retrained winner) | test overall AUC |",
        "|---|---|---|---|---|---|",
        f"| (a) FairTune-style: sequential TPE, full epochs, last epoch | {ms('a_trials', 1)} | {ms('a_budget_s', 1)} | "
        f"{ms('a_best_val')} | {ms('a_test_min_auc')} | {ms('a_test_overall_auc')} |",
        f"| (b) this project: TPE + ASHA, {cfg_b.search.max_concurrent} concurrent | {ms('b_trials', 1)} ({ms('b_stopped_early', 1)} stopped early) | "
        f"{ms('b_budget_s', 1)} | {ms('b_best_val')} | {ms('b_test_min_auc')} | {ms('b_test_overall_auc')} |",
        "",
        (f"(b) matched (a)'s final best validation objective after **{fr['mean']:.2f} ± {fr['sd']:.2f}** of the budget "
         f"(reached in {fr['reached']} seeds)" if fr["mean"] is not None else
         f"(b) did not reach (a)'s final best validation objective within the budget ({fr['reached']} seeds)")
        + f"; wall-time ratio (a)/(b) = {result['wall_ratio_a_over_b']:.2f}. (a) read at its best epoch instead of its last: "
          f"{ms('a_best_val_any_epoch')}; (b) matched that after "
          + (f"{strict['mean']:.2f} ± {strict['sd']:.2f}" if strict["mean"] is not None else "none")
          + f" of the budget (reached in {strict['reached']} seeds).",
        "",
        (f"Winners confirmed with {cfg_b.search.confirm.seeds} seeds among each search's top {cfg_b.search.confirm.top_k} "
         f"(validation seed mean: (a) {ms('a_confirmed_val')}, (b) {ms('b_confirmed_val')}), then retrained once and "
         f"tested: (b) - (a) test worst-group AUC {ms('b_minus_a_test_min_auc')}; by the paired 95% interval (b) is not "
         f"worse in {result['b_not_worse_on_test']} seeds ("
         + ", ".join(f"seed {p['seed']}: {p['b_minus_a_test_min_auc']:+.3f} [{p['b_minus_a_lo']:+.3f}, "
                     f"{p['b_minus_a_hi']:+.3f}] {p['b_vs_a_verdict']}" for p in per_seed) + ")."),
        "",
        f"Where a trial's time goes (median): trial start to first epoch report {ms('a_first_report_s', 1)} s in (a), "
        f"{ms('b_first_report_s', 1)} s in (b); one further epoch (train + validation + report) {ms('a_epoch_s', 1)} s "
        f"in (a) (2 threads), {ms('b_epoch_s', 1)} s in (b) (1 thread, 2 trials at once).",
    ])
    emit(result, table)


if __name__ == "__main__":
    main()
