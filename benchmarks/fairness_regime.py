"""Benchmark: is the embedded synthetic benchmark in FairTune's regime (the fairness generalisation gap)?

FairTune's premise: a fine-tuned model fits every group of the training set almost perfectly, and
the bias shows only at test. This script fine-tunes the cached pre-trained micro backbone in-process
(``fine_tune``, as a trial or a retrain runs it) on the synthetic data built with the given knobs,
for full fine-tuning, the linear probe and a few random masks of the configured mask space, and
reports per fine-tune:

* train and test worst-group AUC (``min_auc``), overall AUC and every group's AUC; the train metrics
  are those of the weights ``fine_tune`` keeps (the best validation epoch, or the last with
  ``--set train.select_epoch=last``), scored without augmentation;
* the 95 % bootstrap interval half-width of test ``min_auc`` (stratified by group x label, as the
  search's test report does), i.e. how finely the test split resolves the worst group;
* seconds per fine-tune (training, per-epoch validation and the final train/test scoring).

The backbone is the one the default config pre-trains (cached under ``.fairtune_cache``): the source
task depends only on the image size, the tone count, ``source_samples`` and the seed, so changing the
target knobs reuses it.

    .venv/bin/python benchmarks/fairness_regime.py [--quick] [--set data.synthetic.n_samples=800 ...]
        [--masks full,linear,random:3] [--lr 1e-3] [--epochs 12] [--seeds 1] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, env_info, mean_sd, quiet_stdout  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SOURCE_KNOBS = ("image_size", "n_skin_tones", "source_samples", "seed")


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got '{p}'")
        out[key] = yaml.safe_load(value)
    return out


def expand_masks(text: str, n_bits: int, space: str, seed: int) -> list[str]:
    """``full,linear,random:3,attn_mlp_norm:0101...`` -> mask strings; random masks: each bit on with p 0.5."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for item in text.split(","):
        item = item.strip()
        if item.startswith("random:"):
            for _ in range(int(item.split(":")[1])):
                out.append(f"{space}:" + "".join(str(b) for b in rng.integers(0, 2, n_bits)))
        elif item:
            out.append(item)
    return out


def pretrain_config(cfg):
    """The default config with only the source task's knobs of ``cfg``: its cached backbone is the one
    a default study uses, and it does not depend on the target knobs explored here."""
    from fairtune_ray.config import SyntheticConfig

    src = SyntheticConfig(**{k: getattr(cfg.data.synthetic, k) for k in SOURCE_KNOBS})
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"synthetic": src})})


def one_fit(cfg, data, checkpoint, mask: str, lr: float, seed: int, n_boot: int) -> dict:
    from fairtune_ray.metrics import bootstrap_intervals
    from fairtune_ray.training.loop import fine_tune
    from fairtune_ray.training.spec import TrialSpec

    names = data.info.attributes[cfg.data.sensitive_attribute]
    t0 = time.perf_counter()
    fit = fine_tune(cfg, TrialSpec(mask=mask, lr=lr, seed=seed), data, checkpoint, final_splits=("train", "test"))
    seconds = time.perf_counter() - t0
    test = fit.scores["test"]
    ci = bootstrap_intervals(test.labels, test.scores, test.groups, ["min_auc"], n_boot=n_boot, seed=0,
                             group_names=names)["min_auc"]
    row = {"mask": mask, "seed": seed, "lr": lr, "trainable": fit.trainable_params, "best_epoch": fit.best_epoch,
           "seconds": round(seconds, 2), "train_sps": round(fit.train_samples_per_s, 1),
           "val_min_auc": fit.best_val.get("val/min_auc"), "test_min_auc_ci": [ci["lo"], ci["hi"]],
           "test_min_auc_half_width": (ci["hi"] - ci["lo"]) / 2}
    for split in ("train", "test"):
        m = fit.final[split]
        row[f"{split}_min_auc"] = m["min_auc"]
        row[f"{split}_overall_auc"] = m["overall_auc"]
        row[f"{split}_group_auc"] = {g: m.get(f"group/{g}/auc") for g in names.values()}
    return row


def split_counts(data, attribute: str, minority: int) -> dict:
    m = data.manifest
    return {s: {"n": int((m.split == s).sum()), "minority": int(((m.split == s) & (m[attribute] == minority)).sum()),
                "minority_pos": int(((m.split == s) & (m[attribute] == minority) & (m.label == 1)).sum())}
            for s in ("train", "val", "test")}


def _f(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 300 + 180 images, tiny pre-training, 2 epochs, full and linear only")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    ap.add_argument("--masks", default=None, help="comma list: full, linear, random:N, or space:bits")
    ap.add_argument("--lr", type=float, default=None, help="learning rate of every fine-tune (default: train.lr)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default: train.epochs)")
    ap.add_argument("--seeds", type=int, default=1, help="fine-tune seeds per mask")
    ap.add_argument("--mask-seed", type=int, default=0, help="seed of the random masks")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = what a demo trial gets)")
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--cache-dir", default=str(REPO / ".fairtune_cache"))
    args = ap.parse_args()
    masks_text = args.masks or ("full,linear" if args.quick else "full,linear,random:3")

    with quiet_stdout():
        import torch

        from fairtune_ray.config import load_config
        from fairtune_ray.data.loading import load_dataset
        from fairtune_ray.training.pretrain import resolve_checkpoint

        torch.set_num_threads(args.threads)
        overrides = {"data.cache_dir": args.cache_dir, "train.threads": args.threads, **parse_sets(args.set)}
        if args.epochs:
            overrides["train.epochs"] = args.epochs
        if args.quick:  # also a tiny pre-training, as the test-suite's tiny experiment has
            overrides.update({"data.synthetic.n_samples": 300, "data.synthetic.val_samples": 60,
                              "data.synthetic.test_samples": 120, "train.epochs": 2,
                              "data.synthetic.source_samples": 400, "backbone.pretrain_epochs": 1})
        cfg = load_config(None, overrides=overrides)
        t0 = time.perf_counter()
        data = load_dataset(cfg.data)
        data_s = time.perf_counter() - t0
        checkpoint = resolve_checkpoint(pretrain_config(cfg), log=lambda *a: print(*a, file=sys.stderr))
        n_bits = _space_bits(cfg)
        masks = expand_masks(masks_text, n_bits, cfg.mask.space, args.mask_seed)
        lr = args.lr or cfg.train.lr
        k = cfg.data.synthetic.n_skin_tones
        counts = split_counts(data, cfg.data.sensitive_attribute, k - 1)
        rows = []
        for mask in masks:
            for seed in range(args.seeds):
                rows.append(one_fit(cfg, data, checkpoint, mask, lr, seed, args.bootstrap))
                r = rows[-1]
                print(f"{mask} seed {seed}: train {_f(r['train_min_auc'])} test {_f(r['test_min_auc'])} "
                      f"±{_f(r['test_min_auc_half_width'])} ({r['seconds']:.1f}s)", file=sys.stderr)

    synth = cfg.data.synthetic.model_dump()
    result = {"bench": "fairness_regime", "quick": args.quick, "env": env_info(args.threads),
              "synthetic": synth, "overrides": parse_sets(args.set), "epochs": cfg.train.epochs, "lr": lr,
              "group_balanced": cfg.data.group_balanced, "select_epoch": cfg.train.select_epoch,
              "split_counts": counts, "data_seconds": round(data_s, 2), "rows": rows}
    full = [r for r in rows if r["mask"] == "full"]
    if full:
        result["full_train_min_auc"] = mean_sd([r["train_min_auc"] for r in full])[0]
        result["full_test_min_auc"] = mean_sd([r["test_min_auc"] for r in full])[0]
    result["test_min_auc_half_width"] = mean_sd([r["test_min_auc_half_width"] for r in rows])[0]
    result["seconds_per_fit"] = mean_sd([r["seconds"] for r in rows])[0]

    names = list(data.info.attributes[cfg.data.sensitive_attribute].values())
    lines = ["Splits (images / minority / minority positives): "
             + "; ".join(f"{s} {c['n']}/{c['minority']}/{c['minority_pos']}" for s, c in counts.items())
             + f". {cfg.train.epochs} epochs, lr {lr:g}, batch {cfg.data.batch_size}, group_balanced "
             f"{cfg.data.group_balanced}, augment {cfg.data.augment}, weights of the {cfg.train.select_epoch} "
             f"epoch, {args.threads} thread(s).", "",
             "| mask | seed | trainable | best ep | train min AUC | test min AUC [95% CI] | val min AUC | "
             "train AUC | test AUC | train AUC " + " / ".join(names) + " | test AUC " + " / ".join(names) + " | s |",
             "|" + "---|" * 12]
    for r in rows:
        lo, hi = r["test_min_auc_ci"]
        lines.append(f"| {r['mask']} | {r['seed']} | {r['trainable']:,} | {r['best_epoch']} | {_f(r['train_min_auc'])} | "
                     f"{_f(r['test_min_auc'])} [{_f(lo)}, {_f(hi)}] | {_f(r['val_min_auc'])} | "
                     f"{_f(r['train_overall_auc'])} | {_f(r['test_overall_auc'])} | "
                     + " / ".join(_f(r["train_group_auc"][g]) for g in names) + " | "
                     + " / ".join(_f(r["test_group_auc"][g]) for g in names) + f" | {r['seconds']:.1f} |")
    if args.seeds > 1:
        lines += ["", "Mean ± sd over seeds:", "",
                  "| mask | train min AUC | test min AUC | half-width of the test min AUC 95% CI | s per fine-tune |",
                  "|---|---|---|---|---|"]
        for mask in masks:
            mine = [r for r in rows if r["mask"] == mask]
            cells = [mean_sd([r[k] for r in mine]) for k in ("train_min_auc", "test_min_auc",
                                                              "test_min_auc_half_width", "seconds")]
            lines.append(f"| {mask} | " + " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in cells[:3])
                         + f" | {cells[3][0]:.1f} |")
    emit(result, "\n".join(lines))


def _space_bits(cfg) -> int:
    """Bits of the configured mask space on this backbone."""
    from fairtune_ray.search.preflight import check_mask_space

    return check_mask_space(cfg).n_bits


if __name__ == "__main__":
    main()
