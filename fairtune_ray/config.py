"""Experiment configuration: YAML files in experiments/ validated into typed objects.

A bad value or an unknown key fails at load time with its key path (e.g. ``search.asha.grace_period``)
and the reason, before any Ray process starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration problem; the message names the file and key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(_Strict):
    """The embedded dermatology-like dataset (DESIGN 2.4)."""

    n_samples: int = Field(2000, ge=60, description="images in the target task, all splits")
    image_size: int = Field(32, ge=16, le=512)
    minority_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    n_skin_tones: int = Field(3, ge=2, le=6)
    minority_contrast: float = Field(0.7, gt=0.0, le=1.0, description="lesion contrast of the minority tone relative to others")
    artefact_strength: float = Field(0.85, ge=0.5, le=1.0, description="P(artefact | malignant) in the majority groups")
    label_noise: float = Field(0.0, ge=0.0, lt=0.5)
    source_samples: int = Field(4000, ge=100, description="images in the synthetic source (pre-training) task")
    seed: int = 0


class DataConfig(_Strict):
    source: str = Field("synthetic", description="'synthetic' or a prepared dataset folder / URI")
    synthetic: SyntheticConfig = SyntheticConfig()
    sensitive_attribute: str = "skin_tone"
    cache_dir: str = ".fairtune_cache"
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    group_balanced: bool = False
    class_weights: bool = False
    augment: bool = True


class MicroConfig(_Strict):
    """A CPU-sized timm ViT. Average pooling and LayerScale make it trainable from scratch in a few
    hundred steps (a CLS-token ViT with default init sits on a loss plateau far longer)."""

    image_size: int = 32
    patch_size: int = 8
    width: int = 96
    depth: int = 6
    heads: int = 3
    global_pool: Literal["avg", "token"] = "avg"
    layer_scale: Optional[float] = Field(0.1, gt=0)


class BackboneConfig(_Strict):
    name: str = Field("micro", description="'micro' or any timm model name")
    pretrained: bool = False
    checkpoint: Optional[str] = None
    micro: MicroConfig = MicroConfig()
    pretrain_epochs: int = Field(10, ge=1, description="epochs on the synthetic source task for 'micro'")
    image_size: Optional[int] = Field(None, description="input size override passed to timm")

    @model_validator(mode="after")
    def _weights_source(self):
        if self.pretrained and self.checkpoint:
            raise ValueError("set either 'pretrained: true' or 'checkpoint', not both")
        return self


class TrainConfig(_Strict):
    epochs: int = Field(4, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    momentum: float = 0.9
    warmup_epochs: float = Field(0.5, ge=0)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    objective: str = "min_auc"
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch CPU threads per trial; 0 = from the trial's CPUs")
    lora_rank: int = Field(4, ge=1)
    select_epoch: Literal["best", "last"] = Field(
        "best", description="weights evaluated after training: best epoch by the validation objective, or the last")


class MaskConfig(_Strict):
    space: str = "attn_mlp_norm"


class AshaConfig(_Strict):
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class SearchConfig(_Strict):
    num_samples: int = Field(16, ge=1)
    max_concurrent: int = Field(2, ge=1)
    n_initial_points: int = Field(6, ge=1)
    seed: int = 0
    lr_min: float = Field(1e-5, gt=0)
    lr_max: float = Field(1e-3, gt=0)
    asha: AshaConfig = AshaConfig()
    selection: Literal["best", "pareto", "dto"] = "best"
    retrain_seeds: int = Field(3, ge=1)
    baselines: list[str] = ["full", "linear"]
    bootstrap: int = Field(500, ge=10)
    storage: str = "runs"
    name: Optional[str] = None
    max_failures: int = Field(1, ge=0)
    method: Literal["fairtune", "fisher", "both"] = "fairtune"
    reuse_actors: bool = Field(
        False, description="keep trial processes warm between trials (saves the ~3 s start-up of a trial on 2 cores; "
                           "worth it when trials last seconds, e.g. the synthetic data)")

    @model_validator(mode="after")
    def _lr_range(self):
        if self.lr_min >= self.lr_max:
            raise ValueError(f"lr_min ({self.lr_min}) must be below lr_max ({self.lr_max})")
        return self


class ResourcesConfig(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class TrialConfig(_Strict):
    workers: int = Field(1, ge=1)
    resources: ResourcesConfig = ResourcesConfig()


class FisherConfig(_Strict):
    samples_per_group: int = Field(64, ge=2)
    chunk_size: int = Field(32, ge=1)
    gamma: list[float] = [0.0, 1.0]
    ewc_lambda_max: float = Field(100.0, ge=0)
    ranks: list[int] = [4, 8]
    factorise: list[str] = ["head"]
    prior_k: list[int] = [1, 2, 3]
    importance_path: Optional[str] = Field(
        None, description="set by the search (method fisher/both): the cached importance.pt that trials read I' from")


class TrackingConfig(_Strict):
    uri: Optional[str] = Field(None, description="MLflow tracking URI; default sqlite:///mlruns.db or $MLFLOW_TRACKING_URI")
    experiment: str = "fairtune-ray"


class ExperimentConfig(_Strict):
    name: str = "synthetic-derm"
    data: DataConfig = DataConfig()
    backbone: BackboneConfig = BackboneConfig()
    train: TrainConfig = TrainConfig()
    mask: MaskConfig = MaskConfig()
    search: SearchConfig = SearchConfig()
    trial: TrialConfig = TrialConfig()
    fisher: FisherConfig = FisherConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("train")
    @classmethod
    def _objective_known(cls, v: TrainConfig):
        from fairtune_ray.metrics.objectives import parse_objective

        parse_objective(v.objective)  # raises ValueError naming the unknown metric
        return v


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {path}: {msg}" + (f" (got {e['input']!r})" if e["type"] != "extra_forbidden" and not isinstance(e.get("input"), dict) else ""))
    return "\n".join(lines)


def _set_path(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def config_from_dict(data: dict, source: str = "<dict>", overrides: Optional[dict] = None) -> ExperimentConfig:
    data = dict(data or {})
    for k, v in (overrides or {}).items():
        _set_path(data, k, v)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None, overrides: Optional[dict] = None) -> ExperimentConfig:
    """Load and validate a YAML experiment; ``None`` gives the embedded synthetic default."""
    if path is None:
        return config_from_dict({}, "<default>", overrides)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return config_from_dict(data, str(p), overrides)
