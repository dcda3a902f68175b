"""A small orchestrator: run named stages in order and record each one's output in the run folder.

A stage is a name, a function of the outputs so far, and how its output becomes JSON and back.
Each finished stage is written to ``<run folder>/stages/<name>.json``; on a resumed run a stage
whose record exists is restored from it instead of run again, so a study interrupted after its
Tune stage (or a report that failed) continues from there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from fairtune_ray.search.run_folder import STAGES_DIR, read_json, write_json

Outputs = dict[str, Any]


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Outputs], Any]
    to_record: Callable[[Any], Any] = lambda out: out.to_record()
    from_record: Optional[Callable[[Any, Outputs], Any]] = None  # None: always run again on resume


class RecordStore:
    """``stages/<name>.json`` files of one run folder."""

    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / STAGES_DIR

    def path(self, stage: str) -> Path:
        return self.folder / f"{stage}.json"

    def read(self, stage: str) -> Optional[Any]:
        return read_json(self.path(stage))

    def write(self, stage: str, record: Any) -> Path:
        return write_json(self.path(stage), record)

    def recorded(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.is_dir() else []


def run_stages(stages: Sequence[Stage], outputs: Outputs, store: RecordStore, *, resume: bool = False,
               log: Callable = print) -> Outputs:
    """Run (or, when resuming, restore) each stage in order; ``outputs`` maps stage names to outputs."""
    outputs = dict(outputs)
    for stage in stages:
        record = store.read(stage.name) if resume and stage.from_record is not None else None
        if record is not None:
            log(f"stage {stage.name}: restored from {store.path(stage.name)}")
            outputs[stage.name] = stage.from_record(record, outputs)
            continue
        outputs[stage.name] = stage.run(outputs)
        store.write(stage.name, stage.to_record(outputs[stage.name]))
    return outputs
