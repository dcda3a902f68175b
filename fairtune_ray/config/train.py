"""The ``train`` section: the inner fine-tune that every trial, retrain and baseline runs."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from fairtune_ray.config.base import StrictSection


class TrainConfig(StrictSection):
    """The inner fine-tune: one loop for every trial, retrain and baseline, with validation metrics
    on the whole split after every epoch."""

    epochs: int = Field(12, ge=1, description=(
        "Training epochs of every trial and retrain; also ASHA's maximum (a trial reports once per epoch)."))
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description=(
        "AdamW, or SGD with `momentum`; only the trainable parameters are optimised."))
    lr: float = Field(1e-3, gt=0, description=(
        "Learning rate of the baselines, of the search's initial points (both clipped to "
        "[search.lr_min, search.lr_max]) and of `fairtune-ray finetune`; trials draw their own."))
    weight_decay: float = Field(0.05, ge=0, description=(
        "Weight decay of weight matrices (parameters with ndim > 1); biases and norm parameters get none."))
    momentum: float = Field(0.9, description="SGD momentum; ignored by AdamW.")
    warmup_epochs: float = Field(0.5, ge=0, description=(
        "Linear warm-up from lr/100 to lr, in epochs (fractions allowed); then a per-step cosine decay "
        "to lr/100."))
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field("auto", description=(
        "Accelerate's mixed precision; 'auto' is bf16 on a GPU that supports it, fp16 on other GPUs and "
        "'no' on the CPU."))
    objective: str = Field("min_auc", description=(
        "Validation objective the search optimises and the best epoch is chosen by: a metric, which keeps "
        "its direction (min_auc, es_auc maximised; auc_gap minimised), or a linear combination whose terms all "
        "pull one way (a negative coefficient reverses a metric): `min_auc - 0.5*auc_gap` is maximised, "
        "`auc_gap + eodds_diff` minimised; `min_auc + auc_gap` and unknown metrics fail at load. An optional "
        "`max:` / `min:` prefix states the intended direction. fairlearn's names work as ours "
        "(`equalized_odds_difference` = eodds_diff, `demographic_parity_difference` = dp_diff, "
        "`equal_opportunity_difference` = eop_diff, `roc_auc_score_group_min` = min_auc, ...)."))
    seed: int = Field(0, description=(
        "Seed of a fine-tune (head initialisation, batch order); retrains use seed, seed+1, ... It also "
        "draws the Fisher samples."))
    threads: int = Field(0, ge=0, description=(
        "torch CPU threads of a trial process; 0 = as many as the trial's CPUs (`trial.resources.cpu`)."))
    select_epoch: Literal["best", "last"] = Field("best", description=(
        "Weights evaluated after training: those of the best epoch by the validation objective, or of the last."))
