"""What the stages hand each other. Each type records itself as JSON (``to_record``) so a resumed
run can start after the last recorded stage; live objects (data, Ray handles) are not recorded."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.models.shipping import CheckpointLike
from fairtune_ray.search.results import ResultRow, Role
from fairtune_ray.training.spec import TrialSpec


@dataclass
class SearchRequest:
    """What the user asked for (the CLI's flags)."""

    cfg: ExperimentConfig
    tracking_uri: Optional[str] = None
    resume: bool = False
    name: Optional[str] = None
    address: Optional[str] = None
    num_gpus: Optional[int] = None


@dataclass
class Prepared:
    """A checked study: run folder, MLflow parent run, data and weights ready, Ray started."""

    cfg: ExperimentConfig
    name: str
    run_dir: Path
    storage: str
    tracking_uri: str
    parent_run_id: str
    space_name: str
    n_bits: int
    group_names: dict[int, str]
    resume: bool = False
    prior_masks: list[str] = field(default_factory=list)
    data: Optional[PackedDataset] = field(default=None, repr=False)
    checkpoint: CheckpointLike = field(default=None, repr=False)

    @property
    def exp_path(self) -> str:
        """Where Ray Tune keeps this study's experiment state (local folder or URI)."""
        return f"{self.storage.rstrip('/')}/{self.name}"

    def to_record(self) -> dict:
        return {"name": self.name, "run_dir": str(self.run_dir), "storage": self.storage,
                "tracking_uri": self.tracking_uri, "parent_run_id": self.parent_run_id,
                "space_name": self.space_name, "n_bits": self.n_bits, "prior_masks": self.prior_masks,
                "group_names": {str(k): v for k, v in self.group_names.items()}}


@dataclass
class TuneOutcome:
    """One record per trial (config, best-epoch validation metrics, status) and the statuses."""

    trials: list[dict]
    statuses: dict[str, tuple[str, str]]

    def to_record(self) -> dict:
        return {"trials": self.trials, "statuses": {k: list(v) for k, v in self.statuses.items()}}

    @classmethod
    def from_record(cls, record: dict) -> "TuneOutcome":
        return cls(record["trials"], {k: tuple(v) for k, v in record["statuses"].items()})


@dataclass
class Candidate:
    """A configuration to retrain and test, with the role its row will have in the results."""

    method: str
    role: Role
    spec: TrialSpec

    def to_record(self) -> dict:
        return {"method": self.method, "role": self.role.value, "spec": self.spec.to_dict()}

    @classmethod
    def from_record(cls, record: dict) -> "Candidate":
        return cls(record["method"], Role(record["role"]), TrialSpec(**record["spec"]))


@dataclass
class Selection:
    """The selected trial and everything to retrain: the selected configuration first, then the rest."""

    selected: dict
    candidates: list[Candidate]
    lr_grid: dict[str, list[dict]] = field(default_factory=dict)  # baseline -> [{lr, objective}, ...]

    @property
    def selected_spec(self) -> TrialSpec:
        return self.candidates[0].spec

    def to_record(self) -> dict:
        return {"selected": self.selected, "candidates": [c.to_record() for c in self.candidates],
                "lr_grid": self.lr_grid}

    @classmethod
    def from_record(cls, record: dict) -> "Selection":
        return cls(record["selected"], [Candidate.from_record(c) for c in record["candidates"]],
                   record.get("lr_grid", {}))


@dataclass
class Tested:
    """The results table: one row per candidate, with test metrics, intervals and scores."""

    rows: list[ResultRow]

    def to_record(self) -> dict:
        return {"rows": [r.to_flat() for r in self.rows]}

    @classmethod
    def from_record(cls, record: dict) -> "Tested":
        return cls([ResultRow.from_flat(r) for r in record["rows"]])



@dataclass
class Confirmation:
    """The best trials trained again with several seeds and scored on validation (empty when
    ``search.confirm.top_k`` is 0); selection ranks them by ``statistic``."""

    trials: list[dict]
    statistic: str = "mean"

    def to_record(self) -> dict:
        return {"trials": self.trials, "statistic": self.statistic}

    @classmethod
    def from_record(cls, record: dict) -> "Confirmation":
        return cls(record["trials"], record.get("statistic", "mean"))
