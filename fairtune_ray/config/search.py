"""The ``search`` and ``trial`` sections: the outer loop on Ray Tune, and what each trial runs on."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from fairtune_ray.config.base import StrictSection
from fairtune_ray.config.constraint import parse_constraint, search_baselines

CUDA_CONTEXT_MB = 500
"""Default MiB kept per fractional-GPU trial for its CUDA context (typically 300-600 MiB)."""


class AshaConfig(StrictSection):
    """ASHA early stopping on the epoch (Ray Tune's ``ASHAScheduler``, maximum ``train.epochs``)."""

    grace_period: Optional[int] = Field(None, ge=1, description=(
        "Epochs every trial runs before ASHA may stop it; null = one epoch past the warm-up "
        "(ceil(train.warmup_epochs) + 1, at most train.epochs), so no trial is judged while its lr still ramps up."))
    reduction_factor: float = Field(2.0, gt=1, description=(
        "ASHA's halving rate: about 1 in `reduction_factor` trials reaching a rung continues past it."))


class ConfirmConfig(StrictSection):
    """The confirmation stage: the best trials on validation are trained again with several seeds, on
    train and scored on validation only, so the pick is not the luckiest of many noisy trials."""

    top_k: int = Field(3, ge=0, description=(
        "Trials (best validation objective first) retrained with `seeds` seeds before selection; 0 = no "
        "confirmation, the single best trial is selected as it is."))
    seeds: int = Field(3, ge=1, description="Seeds per confirmed trial (train.seed, train.seed+1, ...).")
    statistic: Literal["mean", "lcb"] = Field("mean", description=(
        "What selection ranks the confirmed trials by: the seed-mean validation objective, or its lower "
        "confidence bound (mean - one standard error, the pessimistic side for a minimised objective). "
        "Selections `pareto` and `dto` use the seed-mean per-group AUCs."))


class LcbConfig(StrictSection):
    """The bootstrap bound a trial reports to Tune with ``search.tune_value: lcb``."""

    replicates: int = Field(200, ge=20, description=(
        "Bootstrap replicates (group x label stratified, on the validation split) per epoch."))
    quantile: float = Field(0.1, gt=0, lt=0.5, description=(
        "The bound's quantile: 0.1 reports the 10th percentile of a maximised objective (the 90th of a "
        "minimised one), a one-sided 90% bound."))


class SearchConfig(StrictSection):
    """The study: HyperOpt TPE proposes configurations, ASHA stops weak trials, then the selected
    configuration and the baselines are retrained and tested."""

    num_samples: int = Field(16, ge=1, description=(
        "Trials in the study, the initial points (all-ones and all-zeros masks, Fisher seed masks) included."))
    max_concurrent: int = Field(1, ge=1, description=(
        "Trials running at once; keep max_concurrent x the trial's resources within the cluster. Above 1 the "
        "order in which trials finish changes what TPE has seen, so a rerun gives other trials; 1 (the "
        "embedded demo) reproduces the same table."))
    n_initial_points: int = Field(6, ge=1, description=(
        "Random trials before TPE starts to model the results (HyperOpt's n_initial_points)."))
    seed: int = Field(0, description=(
        "Seed of TPE (the same config and seed propose the same trials) and of the test bootstrap."))
    lr_min: float = Field(1e-5, gt=0, description=(
        "Lower end of the log-uniform learning-rate range of the trials; must be below `lr_max`."))
    lr_max: float = Field(1e-3, gt=0, description="Upper end of the log-uniform learning-rate range of the trials.")
    tpe_window: Optional[int] = Field(100, description=(
        "Finished trials TPE fits its model on at each suggestion: the best half by objective and the most "
        "recent ones (search/tpe_window.py). Keeps a suggestion's cost flat over a long study (HyperOpt refits "
        "on every past trial otherwise); a study of at most this many trials is unaffected. null = every trial."))
    asha: AshaConfig = Field(AshaConfig(), description="Early stopping of weak trials.")
    tune_value: Literal["point", "lcb"] = Field("point", description=(
        "What each trial reports to Tune (TPE and ASHA): the best-so-far validation objective ('point'), "
        "or the best-so-far bootstrap lower confidence bound of it ('lcb', see `search.lcb`), which "
        "penalises objectives measured on few minority images."))
    lcb: LcbConfig = Field(LcbConfig(), description="The bootstrap bound of `tune_value: lcb`.")
    confirm: ConfirmConfig = Field(ConfirmConfig(), description="Seed-averaged confirmation of the best trials.")
    selection: Literal["best", "pareto", "dto"] = Field("best", description=(
        "How the configuration to retrain is chosen, on validation metrics only: 'best' objective; 'pareto' "
        "the non-dominated trials over per-group AUCs, then the one best for the full-fine-tuning trial's "
        "weakest group; 'dto' the trial closest to the per-group best AUCs (MEDFAIR)."))
    retrain_seeds: int = Field(3, ge=1, description=(
        "Seeds each selected configuration and baseline is retrained with; test metrics are those of the "
        "seed-averaged scores."))
    baselines: list[str] = Field(["full", "linear"], description=(
        "Fixed masks retrained and tested beside the selected one: full, linear, bitfit, attn_only, "
        "norm_only, or a PEFT method at its default placement (lora, dora, ia3, loha; settings in `peft`)."))
    baseline_lrs: Optional[list[float]] = Field(None, description=(
        "Learning rates each baseline is trained with (train on train, score on validation, same epochs) "
        "before the best one is retrained and tested; null = 3 points log-spaced over [lr_min, lr_max]. "
        "A single value fixes the baseline's lr."))
    bootstrap: int = Field(500, ge=10, description="Bootstrap replicates behind the 95% intervals of the test metrics.")
    storage: str = Field("runs", description=(
        "Where Ray Tune keeps the study's state: a local folder, which then also holds the run folder "
        "`<storage>/<name>`, or a URI such as s3://bucket/path (run folder `runs/<name>`). `--storage` overrides."))
    name: Optional[str] = Field(None, description=(
        "Study name (Tune experiment, run folder, MLflow parent run); null = `<name>-<date>-<time>`. "
        "`--name` overrides; resuming needs it."))
    max_failures: int = Field(1, ge=0, description=(
        "Retries of a failed trial (an exception, a non-finite loss, a lost node) before it counts as failed."))
    method: Literal["fairtune", "fisher", "both"] = Field("fairtune", description=(
        "'fairtune' searches mask bits and lr; 'fisher' searches lr and the Fisher options with every "
        "parameter trained; 'both' searches all of them."))
    constraint: Optional[str] = Field(None, description=(
        "Bounds a selected configuration must meet on validation, joined by `and`: `<metric> >= <number>` "
        "(e.g. `min_auc >= 0.75` with `train.objective: overall_auc`) or relative to a baseline point of the "
        "search, `auc_gap <= full` (+/- a number allowed): the value the full fine-tuning (or `linear` probe) "
        "trial reached. A trial is feasible when every bound holds at its best epoch; selection and "
        "confirmation rank feasible trials first, or take the least-violating one when none is. TPE and "
        "ASHA see the objective penalised by `constraint_penalty` (absolute bounds only). null = no constraint."))
    constraint_penalty: float = Field(10.0, ge=0, description=(
        "What TPE and ASHA see for an epoch that breaks an absolute bound of `constraint`: the objective "
        "minus (plus, when minimised) this times the violation, the sum over the bounds of how far each "
        "metric lies on the wrong side (0.02 below `min_auc >= 0.75` costs 0.2 at the default)."))
    reuse_actors: bool = Field(True, description=(
        "Keep trial processes warm between trials (Ray Tune's `reuse_actors`): a new trial skips the 2-3 s "
        "start-up of a fresh process (importing torch, timm, peft, MLflow). Nothing carries over: each trial "
        "sets its seed, torch threads and GPU memory cap, builds its model and optimizer and opens its own "
        "MLflow child run, and the process frees its tensors and CUDA cache when a trial ends. false = a "
        "fresh process per trial."))
    export: Literal["selected", "all", "none"] = Field("selected", description=(
        "Which retrained models are saved in the run folder (safetensors + model.json, first retrain seed) "
        "and logged to the MLflow parent run as pyfunc models: 'selected' (runs/<name>/model), 'all' (the "
        "baselines too, under runs/<name>/models/) or 'none'. `fairtune-ray evaluate` and `predict` use them."))
    warm_start: Optional[str] = Field(None, description=(
        "An earlier study whose trials TPE starts from, as points it has already evaluated (configs and the values "
        "TPE saw then; not run again): its run folder (runs/<name>, or <name> under `storage`) or its MLflow parent "
        "run id in this study's tracking store. It must have searched the same backbone, method, mask space and "
        "bit count and dimensions, with the same `train.objective` and `tune_value` (checked before Ray starts); "
        "its data and sensitive attribute may differ. Failed trials and configs outside this study's space (an "
        "lr out of range, another category) are skipped and counted. This study's own initial points still run "
        "first. null = a cold start."))

    @field_validator("constraint")
    @classmethod
    def _constraint_parses(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        """A typo, an unknown metric or a baseline the search does not run fails at load."""
        if v is None:
            return v
        baselines = search_baselines(info.data.get("method", "fairtune"), info.data.get("num_samples", 1))
        parse_constraint(v, baselines)
        return v.strip()

    @field_validator("warm_start")
    @classmethod
    def _warm_start_named(cls, v: Optional[str]) -> Optional[str]:
        return (v.strip() or None) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _tpe_window(self):
        if self.tpe_window is not None and self.tpe_window < 2 * self.n_initial_points:
            raise ValueError(f"tpe_window ({self.tpe_window}) must be null or at least twice n_initial_points "
                             f"({self.n_initial_points}): TPE needs that many finished trials to fit on")
        return self

    @model_validator(mode="after")
    def _lr_range(self):
        if self.lr_min >= self.lr_max:
            raise ValueError(f"lr_min ({self.lr_min}) must be below lr_max ({self.lr_max})")
        if self.baseline_lrs is not None and (not self.baseline_lrs or min(self.baseline_lrs) <= 0):
            raise ValueError(f"baseline_lrs must be null or a list of positive learning rates, got {self.baseline_lrs}")
        return self

    def baseline_lr_grid(self) -> list[float]:
        """The learning rates every baseline is tried with on validation (``baseline_lrs``)."""
        if self.baseline_lrs is not None:
            return list(self.baseline_lrs)
        return [self.lr_min * (self.lr_max / self.lr_min) ** (i / 2) for i in range(3)]


class ResourcesConfig(StrictSection):
    """What Ray reserves for a trial (``trial.workers: 1``) or for each of its workers (``workers > 1``)."""

    cpu: float = Field(1.0, gt=0, description=(
        "CPUs per trial, or per worker; fractions allowed. With `train.threads: 0` also torch's thread count."))
    gpu: float = Field(0.0, ge=0, description=(
        "GPUs per trial, or per worker. A fraction packs trials on one GPU (0.25: four); each such trial caps "
        "its CUDA allocator at its share of the GPU's memory minus `cuda_context_mb`. Multi-worker trials "
        "take whole GPUs. Packing needs CPUs too: four 0.25-GPU trials on a 4-vCPU node take `cpu: 1` each."))
    cuda_context_mb: int = Field(CUDA_CONTEXT_MB, ge=0, description=(
        "MiB of a fractional-GPU trial's share kept for its CUDA context (driver state, kernels), which "
        "lives outside the allocator that the cap limits; typically 300-600 MiB per process "
        "(benchmarks/gpu/gpu_check.py measures it). On a 24 GB A10G (about 23000 MiB) at `gpu: 0.25`: about "
        "5750 MiB per trial, of which about 5250 MiB for tensors."))


class TrialConfig(StrictSection):
    """How one trial runs: a single process, or a Ray Train ``TorchTrainer`` with several workers
    (docs/distributed.md)."""

    workers: int = Field(1, ge=1, description=(
        "1: a plain Ray Tune function trial; N > 1: the trial fits a Ray Train TorchTrainer with N "
        "data-parallel workers."))
    resources: ResourcesConfig = Field(ResourcesConfig(), description="Resources of the trial or of each worker.")
