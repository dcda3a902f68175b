"""``run_search``: the study as a list of stages.

prepare -> tune -> confirm -> select -> baseline_lrs -> retrain_test -> publish -> report. Prepare always runs (it checks the
config, reopens the MLflow parent run and starts Ray); with ``resume`` every later stage that was
recorded in ``runs/<name>/stages/`` is restored instead of run again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.reporting.stage import write_report_stage
from fairtune_ray.search.results import ResultRow
from fairtune_ray.search.run_folder import update_run_info
from fairtune_ray.search.stages.baseline_lrs import tune_baseline_lrs
from fairtune_ray.search.stages.confirm import confirm
from fairtune_ray.search.stages.prepare import prepare
from fairtune_ray.search.stages.publish import publish
from fairtune_ray.search.stages.retrain_test import retrain_and_test
from fairtune_ray.search.stages.select import select
from fairtune_ray.search.stages.tune import run_tune
from fairtune_ray.search.stages.types import Confirmation, Prepared, SearchRequest, Selection, Tested, TuneOutcome
from fairtune_ray.study.pipeline import RecordStore, Stage, run_stages


@dataclass
class SearchOutcome:
    name: str
    run_dir: Path
    parent_run_id: str
    tracking_uri: str
    trials: list[dict]
    selected: dict
    rows: list[ResultRow] = field(default_factory=list)
    statuses: dict = field(default_factory=dict)
    report: Optional[Path] = None


def study_stages(log: Callable = print, report: bool = True) -> list[Stage]:
    """The stages after prepare, each reading the outputs it needs by stage name."""
    stages = [
        Stage("tune", lambda o: run_tune(o["prepare"], log), from_record=lambda r, o: TuneOutcome.from_record(r)),
        Stage("confirm", lambda o: confirm(o["prepare"], o["tune"], log),
              from_record=lambda r, o: Confirmation.from_record(r)),
        Stage("select", lambda o: _select(o, log), from_record=lambda r, o: Selection.from_record(r)),
        Stage("baseline_lrs", lambda o: tune_baseline_lrs(o["prepare"], o["select"], log),
              from_record=lambda r, o: Selection.from_record(r)),
        Stage("retrain_test", lambda o: retrain_and_test(o["prepare"], o["baseline_lrs"], log),
              from_record=lambda r, o: Tested.from_record(r)),
        # Always run again on resume: it marks the reopened parent run finished.
        Stage("publish", lambda o: publish(o["prepare"], o["tune"], o["baseline_lrs"], o["retrain_test"], log),
              to_record=lambda table: {"table": table}),
    ]
    if report:
        stages.append(Stage("report", lambda o: write_report_stage(o["prepare"].run_dir, o["prepare"].tracking_uri, log),
                            to_record=lambda path: {"report": str(path)}))
    return stages


def _select(outputs: dict, log: Callable) -> Selection:
    prepared: Prepared = outputs["prepare"]
    selection = select(prepared, outputs["tune"], outputs["confirm"], log)
    update_run_info(prepared.run_dir, selected_trial_id=selection.selected["trial_id"])
    return selection


def run_search(cfg: ExperimentConfig, *, tracking_uri: Optional[str] = None, resume: bool = False,
               name: Optional[str] = None, address: Optional[str] = None, num_gpus: Optional[int] = None,
               report: bool = True, log: Callable = print) -> SearchOutcome:
    """Run the whole study; with ``resume`` continue an interrupted one of the same ``name``."""
    prepared = prepare(SearchRequest(cfg, tracking_uri, resume, name, address, num_gpus), log)
    store = RecordStore(prepared.run_dir)
    store.write("prepare", prepared.to_record())
    out = run_stages(study_stages(log, report), {"prepare": prepared}, store, resume=resume, log=log)
    tuned, selection, tested = out["tune"], out["baseline_lrs"], out["retrain_test"]
    return SearchOutcome(prepared.name, prepared.run_dir, prepared.parent_run_id, prepared.tracking_uri, tuned.trials,
                         selection.selected, tested.rows, tuned.statuses, out.get("report"))

