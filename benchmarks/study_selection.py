"""Selection study: is the selected configuration fairer than tuned baselines, and does confirmation help?

For each search seed, the demo-sized search on the embedded synthetic benchmark (the defaults of
`fairtune-ray demo`) runs once through the study's own stages; then the selection is made twice from
the same trials: with the confirmation stage (top-k trials retrained with seeds on validation) and
without it (the single best trial). The baselines (full fine-tuning, linear probe, BitFit, LoRA) get
their lr chosen on validation once and are retrained and tested once per seed; each selection is
compared with them by paired bootstrap differences on the same test resamples.

    .venv/bin/python benchmarks/study_selection.py [--seeds 3] [--quick] [--out benchmarks/selection_study.md]

It is not part of `make bench` (about 10 minutes per seed on 2 cores); run_all.py appends the last
result file to RESULTS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0"  # the tune stage reads each trial's progress.csv
from _common import emit, env_info, quiet_stdout  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEFT_BASELINES = ("bitfit", "lora")
BASELINES = ["full", "linear", *PEFT_BASELINES]


def run_seed(seed: int, overrides: dict, log) -> dict:
    """One search seed: tune once, select with and without confirmation, retrain, compare."""
    from fairtune_ray.config import load_config
    from fairtune_ray.search.results import Role, selected_row
    from fairtune_ray.search.stages.baseline_lrs import tune_baseline_lrs
    from fairtune_ray.search.stages.confirm import confirm
    from fairtune_ray.search.stages.prepare import prepare
    from fairtune_ray.search.stages.retrain_test import compare_with_selected, retrain_candidates
    from fairtune_ray.search.stages.select import select
    from fairtune_ray.search.stages.tune import run_tune
    from fairtune_ray.search.stages.types import SearchRequest

    cfg = load_config(None, overrides={**overrides, "search.seed": seed, "search.baselines": BASELINES})
    p = prepare(SearchRequest(cfg, name=f"selection-study-{seed}"), log)
    t0 = time.perf_counter()
    tuned = run_tune(p, log)
    variants = {}
    for name, top_k in (("confirmed", cfg.search.confirm.top_k), ("single best", 0)):
        cfg_v = cfg.model_copy(deep=True)
        cfg_v.search.confirm.top_k = top_k
        p_v = dataclasses.replace(p, cfg=cfg_v)
        variants[name] = select(p_v, tuned, confirm(p_v, tuned, log), log)
    selection = tune_baseline_lrs(p, variants["confirmed"], log)
    baselines = [c for c in selection.candidates if c.role == Role.BASELINE]
    rows = retrain_candidates(cfg, baselines, p.data, p.checkpoint, p.group_names, log)
    out = {"seed": seed, "trials": len(tuned.trials), "lr_grid": selection.lr_grid, "variants": {}}
    retrained: dict[str, object] = {}
    for name, sel in variants.items():
        tid = sel.selected["trial_id"]
        if tid not in retrained:
            retrained[tid] = retrain_candidates(cfg, sel.candidates[:1], p.data, p.checkpoint, p.group_names, log)[0]
        table = [dataclasses.replace(retrained[tid], vs_selected={})] + [dataclasses.replace(r, vs_selected={}) for r in rows]
        compare_with_selected(cfg, table, p.group_names)
        out["variants"][name] = {"trial_id": tid, "val": sel.selected["objective"], "rows": table}
    out["seconds"] = time.perf_counter() - t0
    assert selected_row(out["variants"]["confirmed"]["rows"]) is not None
    return out


def best_peft(rows) -> object:
    """The PEFT baseline with the best validation objective (chosen without test data)."""
    peft = [r for r in rows if r.mask in PEFT_BASELINES]
    return max(peft, key=lambda r: r.val_objective)


def summarise(results: list[dict]) -> tuple[list[dict], str]:
    """Flat per-seed rows and the markdown table: test worst-group AUC with intervals, paired Δ."""
    flat, lines = [], []
    head = ("| seed | selection | selected mask (val) | selected wg-AUC [95% CI] | vs full: Δ wg-AUC | vs linear: Δ wg-AUC "
            "| vs best PEFT: Δ wg-AUC |")
    lines += [head, "|" + "---|" * 7]
    for res in results:
        for name, v in res["variants"].items():
            sel, others = v["rows"][0], v["rows"][1:]
            by_mask = {r.mask: r for r in others}
            peft = best_peft(others)
            cells = {}
            for label, r in (("full", by_mask["full"]), ("linear", by_mask["linear"]), (f"best PEFT ({peft.mask})", peft)):
                cells[label] = r.vs_selected["min_auc"]
            flat.append({"seed": res["seed"], "selection": name, "trial_id": v["trial_id"], "mask": sel.mask,
                         "val": v["val"], "test_min_auc": sel.metric("min_auc"),
                         "test_min_auc_ci": [sel.test["min_auc"].lo, sel.test["min_auc"].hi],
                         "baselines": {r.mask: {"lr": r.lr, "test_min_auc": r.metric("min_auc"),
                                                "val": r.val_objective} for r in others},
                         "paired_min_auc": {k: {"diff": d.diff, "lo": d.lo, "hi": d.hi, "verdict": d.verdict}
                                            for k, d in cells.items()}})
            deltas = " | ".join(f"{d.diff:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}] {d.verdict}" + (f" ({k})" if "PEFT" in k else "")
                                for k, d in cells.items())
            lines.append(f"| {res['seed']} | {name} | `{sel.mask.split(':')[-1]}` ({v['val']:.3f}) | "
                         f"{sel.interval_text('min_auc')} | {deltas} |")
    lines += ["", "Baselines (lr chosen on validation; test worst-group AUC [95% CI]):", "",
              "| seed | " + " | ".join(BASELINES) + " |", "|" + "---|" * (len(BASELINES) + 1)]
    for res in results:
        rows = {r.mask: r for r in res["variants"]["confirmed"]["rows"][1:]}
        lines.append(f"| {res['seed']} | " + " | ".join(f"{rows[b].interval_text('min_auc')} (lr {rows[b].lr:.0e})"
                                                        for b in BASELINES) + " |")
    return flat, "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 seed, tiny data and search")
    ap.add_argument("--cache-dir", default=str(REPO / ".fairtune_cache"))
    ap.add_argument("--out", default=None, help="markdown file (default: benchmarks/selection_study.md; none with --quick)")
    args = ap.parse_args()
    seeds = 1 if args.quick else args.seeds
    out_path = Path(args.out) if args.out else (None if args.quick else HERE / "selection_study.md")
    t0 = time.perf_counter()
    with quiet_stdout(), tempfile.TemporaryDirectory(prefix="study-selection-") as tmp:
        import ray

        overrides = {"data.cache_dir": args.cache_dir, "search.storage": f"{tmp}/runs",
                     "tracking.uri": f"sqlite:///{tmp}/mlruns.db"}
        if args.quick:
            overrides.update({"data.synthetic.n_samples": 300, "train.epochs": 2, "search.num_samples": 4,
                              "search.retrain_seeds": 1, "search.confirm.top_k": 2, "search.confirm.seeds": 2,
                              "search.bootstrap": 50, "backbone.pretrain_epochs": 1, "search.asha.grace_period": 1,
                              "search.baseline_lrs": [1e-4, 1e-3]})
        log = lambda *a: print(*a, file=sys.stderr)  # noqa: E731
        results = [run_seed(seed, overrides, log) for seed in range(seeds)]
        ray.shutdown()
    flat, table = summarise(results)
    result = {"bench": "selection_study", "seeds": seeds, "per_seed": flat, "seconds": time.perf_counter() - t0,
              "env": env_info()}
    emit(result, table)
    if out_path is not None:
        out_path.write_text(f"Command: `.venv/bin/python benchmarks/study_selection.py --seeds {seeds}` "
                            f"({time.strftime('%Y-%m-%d')}, {result['seconds'] / 60:.0f} min, load avg "
                            f"{result['env']['load_avg_1m']})\n\n{table}\n")


if __name__ == "__main__":
    main()
