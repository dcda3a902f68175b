"""The study orchestrator and the typed result row (pure logic, no Ray)."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np

from fairtune_ray.search.results import MetricInterval, ResultRow, Role, read_results, results_table, selected_row, write_results
from fairtune_ray.search.stages.types import Candidate, Selection, TuneOutcome
from fairtune_ray.study.pipeline import RecordStore, Stage, run_stages
from fairtune_ray.training.spec import TrialSpec


class Box:
    def __init__(self, value):
        self.value = value

    def to_record(self):
        return {"value": self.value}


def _stages(calls: list[str], fail_at: str | None = None) -> list[Stage]:
    def make(name, fn):
        def run(outputs):
            calls.append(name)
            if name == fail_at:
                raise RuntimeError(f"{name} failed")
            return Box(fn(outputs))
        return Stage(name, run, from_record=lambda r, o: Box(r["value"]))

    return [make("a", lambda o: o["start"] + 1), make("b", lambda o: o["a"].value * 10),
            Stage("c", lambda o: calls.append("c") or Box(o["b"].value + 1))]  # c has no restore: always runs


def test_stages_run_in_order_and_record_their_outputs(tmp_path):
    calls: list[str] = []
    out = run_stages(_stages(calls), {"start": 1}, RecordStore(tmp_path), log=lambda *_: None)
    assert calls == ["a", "b", "c"] and out["c"].value == 21
    assert json.loads((tmp_path / "stages" / "b.json").read_text()) == {"value": 20}
    assert RecordStore(tmp_path).recorded() == ["a", "b", "c"]


def test_resume_restores_recorded_stages_and_reruns_the_rest(tmp_path):
    store, calls = RecordStore(tmp_path), []
    try:
        run_stages(_stages(calls, fail_at="b"), {"start": 1}, store, log=lambda *_: None)
    except RuntimeError:
        pass
    assert calls == ["a", "b"] and store.recorded() == ["a"]  # the failed stage left no record
    calls.clear()
    logs: list[str] = []
    out = run_stages(_stages(calls), {"start": 100}, store, resume=True, log=logs.append)
    assert calls == ["b", "c"]  # a restored from its record (value 2), not recomputed from start=100
    assert out["a"].value == 2 and out["c"].value == 21
    assert any("stage a: restored" in line for line in logs)
    calls.clear()
    run_stages(_stages(calls), {"start": 100}, store, resume=False, log=lambda *_: None)
    assert calls == ["a", "b", "c"]  # without resume every stage runs


def _row(method: str, role: Role, point: float) -> ResultRow:
    return ResultRow(method=method, role=role, mask="attn_mlp_norm:101", lr=1e-4, trainable_params=123, seeds=2,
                     val_objective=0.7, test={"min_auc": MetricInterval(point, point - 0.1, point + 0.1, 0.01),
                                              "overall_auc": MetricInterval(0.8, 0.7, 0.9, 0.02)})


def test_result_rows_round_trip_through_json_and_know_their_role(tmp_path):
    rows = [_row("My pick", Role.SELECTED, 0.6), _row("Full fine-tuning", Role.BASELINE, 0.5)]
    write_results(rows, tmp_path)
    back = read_results(tmp_path)
    assert back == rows
    assert selected_row(back).method == "My pick"  # by role, not by the word "selected" in the label
    assert back[0].mask_label == "attn_mlp_norm[2/3]"
    flat = json.loads((tmp_path / "results.json").read_text())[0]
    assert flat["role"] == "selected" and flat["test/min_auc_lo"] == 0.5
    assert (tmp_path / "results.csv").read_text().splitlines()[0].startswith("method,role,mask")
    table = results_table(rows)
    assert "0.600 [0.500, 0.700]" in table and "attn_mlp_norm:101" in table


def test_adapters_the_mask_placed_show_in_the_mask_column(tmp_path):
    spec = TrialSpec(mask="attn_mlp_norm:101", lr=1e-3, peft="lora", peft_rank=8, peft_alpha=16.0,
                     peft_targets=["qkv", "proj"])
    row = replace(_row("My pick", Role.SELECTED, 0.6), peft=spec.adapters().label)
    assert row.peft == "lora r8 a16 on qkv,proj"
    write_results([row], tmp_path)
    assert read_results(tmp_path) == [row]
    assert "attn_mlp_norm:101 + lora r8 a16 on qkv,proj" in results_table([row])
    ia3 = TrialSpec(mask="ia3", lr=1e-3).adapters()  # the IA3 baseline: no rank or alpha to show
    assert ia3.label == "ia3 on qkv,proj,fc1,fc2"
    assert _row("Full", Role.BASELINE, 0.5).mask_text == "attn_mlp_norm:101"  # no adapters: the mask alone


def test_missing_metric_reads_as_nan_and_prints_na():
    row = _row("x", Role.BASELINE, float("nan"))
    assert math.isnan(row.metric("min_auc")) and row.interval_text("min_auc") == "n/a"
    assert math.isnan(row.metric("auc_gap")) and row.interval_text("auc_gap") == "n/a"


def test_stage_types_round_trip_their_records():
    sel = Selection({"trial_id": "t1", "config": {"lr": 1e-3}},
                    [Candidate("FairTune (selected)", Role.SELECTED, TrialSpec(mask="block:1010", lr=1e-3)),
                     Candidate("LoRA", Role.BASELINE, TrialSpec(mask="lora", lr=5e-4, label="lora"))])
    back = Selection.from_record(json.loads(json.dumps(sel.to_record())))
    assert back == sel and back.selected_spec.mask == "block:1010"
    tuned = TuneOutcome([{"trial_id": "t1", "status": "completed"}], {"t1": ("completed", "")})
    assert TuneOutcome.from_record(json.loads(json.dumps(tuned.to_record()))) == tuned
    assert np.isfinite(sel.selected_spec.lr)
