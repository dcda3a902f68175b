"""The whole experiment: its sections, the ``tracking`` section, and the cross-section checks."""
from __future__ import annotations

import math
from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from fairtune_ray.config.base import StrictSection
from fairtune_ray.config.data import DataConfig
from fairtune_ray.config.fisher import FisherConfig
from fairtune_ray.config.model import BackboneConfig, MaskConfig
from fairtune_ray.config.peft import PeftConfig
from fairtune_ray.config.search import SearchConfig, TrialConfig
from fairtune_ray.config.train import TrainConfig


class TrackingConfig(StrictSection):
    """Where MLflow records the study: one parent run per search, one child run per trial."""

    uri: Optional[str] = Field(None, description=(
        "MLflow tracking URI, used when neither `--tracking-uri` nor $MLFLOW_TRACKING_URI is given; null = "
        "sqlite:///mlruns.db in the working directory."))
    experiment: str = Field("fairtune-ray", description="MLflow experiment that holds the parent and child runs.")


class ExperimentConfig(StrictSection):
    """One experiment, as one YAML file in experiments/. Every key is optional; the defaults are the
    embedded synthetic demo."""

    name: str = Field("synthetic-derm", description=(
        "Experiment name; a study without `search.name` is called `<name>-<date>-<time>`."))
    data: DataConfig = Field(DataConfig(), description="The dataset and its demographic groups.")
    backbone: BackboneConfig = Field(BackboneConfig(), description="The pre-trained model.")
    train: TrainConfig = Field(TrainConfig(), description="The inner fine-tune.")
    mask: MaskConfig = Field(MaskConfig(), description="The mask space the search explores.")
    peft: PeftConfig = Field(PeftConfig(), description="PEFT methods (HF peft) whose adapters the mask places.")
    search: SearchConfig = Field(SearchConfig(), description="The outer loop, selection, retraining and testing.")
    trial: TrialConfig = Field(TrialConfig(), description="How each trial runs and what it reserves.")
    fisher: FisherConfig = Field(FisherConfig(), description="The Fisher method's options.")
    tracking: TrackingConfig = Field(TrackingConfig(), description="MLflow.")

    @model_validator(mode="before")
    @classmethod
    def _lora_rank_moved(cls, data: Any) -> Any:
        """``train.lora_rank`` (the hand-written LoRA's rank) is now ``peft.rank``: an old config still loads."""
        train = data.get("train") if isinstance(data, dict) else None
        if not isinstance(train, dict) or "lora_rank" not in train:
            return data
        peft = data.get("peft") if isinstance(data.get("peft"), dict) else {}
        if "rank" in peft and peft["rank"] != train["lora_rank"]:
            raise ValueError(f"train.lora_rank ({train['lora_rank']}) is the old name of peft.rank ({peft['rank']}); "
                             "keep only peft.rank")
        return {**data, "train": {k: v for k, v in train.items() if k != "lora_rank"},
                "peft": {**peft, "rank": train["lora_rank"]}}

    @field_validator("train")
    @classmethod
    def _objective_known(cls, v: TrainConfig):
        # lazy: fairtune_ray.metrics loads scikit-learn (~1.4 s); the CLI imports config at start-up
        from fairtune_ray.metrics.objectives import parse_objective

        parse_objective(v.objective)  # raises ValueError naming the unknown metric
        return v

    @model_validator(mode="after")
    def _grace_covers_warmup(self):
        """Resolve ``search.asha.grace_period: null`` so the saved config shows the value used."""
        if self.search.asha.grace_period is None:
            grace = math.ceil(self.train.warmup_epochs) + 1
            self.search.asha.grace_period = max(1, min(grace, self.train.epochs))
        return self
