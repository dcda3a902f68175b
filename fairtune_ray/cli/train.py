"""``fairtune-ray pretrain`` and ``fairtune-ray finetune``: one backbone, one fine-tune, no search."""
from __future__ import annotations

import argparse

from fairtune_ray.cli.common import add_config_arguments, load_args_config


def cmd_pretrain(args) -> int:
    from fairtune_ray.training.pretrain import ensure_pretrained  # lazy: torch and timm

    print(ensure_pretrained(load_args_config(args), force=args.force))
    return 0


def cmd_finetune(args) -> int:
    # lazy: torch, timm and Accelerate, only for this command
    from fairtune_ray.data.groups import report_small_groups
    from fairtune_ray.data.loading import load_dataset
    from fairtune_ray.models import peft_method_names
    from fairtune_ray.reporting.tables import group_table
    from fairtune_ray.search.preflight import check_adapters, check_mask
    from fairtune_ray.training.loop import fine_tune
    from fairtune_ray.training.pretrain import resolve_checkpoint
    from fairtune_ray.training.spec import TrialSpec, with_peft

    cfg = load_args_config(args)
    mask = str(check_mask(cfg, args.mask, "--mask"))  # before the data are loaded and the backbone pre-trained
    method = args.peft or (mask if mask in peft_method_names() else "mask")
    check_adapters(cfg, finetune=method)
    data = load_dataset(cfg.data)  # data.small_groups: reject fails here
    report_small_groups(data.groups, print)
    checkpoint = resolve_checkpoint(cfg)
    spec = TrialSpec(mask=mask, lr=args.lr or cfg.train.lr, seed=cfg.train.seed if args.seed is None else args.seed,
                     epochs=args.epochs)
    spec = with_peft(spec, cfg.peft, method)

    def on_epoch(epoch, m):
        print(f"epoch {epoch:3d}  loss {m['train/loss']:.4f}  val {cfg.train.objective} {m['objective']:.4f}  "
              f"val AUC {m['val/overall_auc']:.4f}", flush=True)

    fit = fine_tune(cfg, spec, data, checkpoint, on_epoch=on_epoch, final_splits=("val", "test"))
    names = data.groups.names
    how = "" if method in ("mask", mask) else f" with {method} adapters"
    print(f"\nmask {mask}{how}: {fit.trainable_params:,} of {fit.total_params:,} parameters trainable; "
          f"best epoch {fit.best_epoch}; {fit.train_samples_per_s:.0f} training images/s")
    for split in ("val", "test"):
        print(f"\n{split} ({data.groups.attribute})\n{group_table(fit.final[split], names)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("pretrain", help="pre-train and cache the micro backbone on the synthetic source task")
    add_config_arguments(sp, required=False)
    sp.add_argument("--force", action="store_true")
    sp.set_defaults(func=cmd_pretrain)

    sp = sub.add_parser("finetune", help="run one inner fine-tune and print per-group metrics")
    add_config_arguments(sp, required=False)
    sp.add_argument("--mask", default="full",
                    help="space:bits, or full|linear|bitfit|attn_only|norm_only|lora|dora|ia3|loha")
    sp.add_argument("--peft", choices=["lora", "dora", "ia3", "loha"],
                    help="PEFT method whose adapters go where the mask is on (settings: peft.rank, peft.alpha, "
                         "peft.targets); default: the mask's own (lora for --mask lora), else none")
    sp.add_argument("--lr", type=float)
    sp.add_argument("--epochs", type=int)
    sp.add_argument("--seed", type=int)
    sp.set_defaults(func=cmd_finetune)
