"""Smoke test of the benchmark scripts: each runs with --quick and prints one parseable JSON line,
and run_all can write its report (with the notes) from those results. Slow: about 3-5 minutes on
2 cores (the search-efficiency and trial-overhead scripts start Ray and run real Tune searches)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from paths import REPO

BENCH = REPO / "benchmarks"
SCRIPTS = {
    "fisher": "bench_fisher.py",
    "scheduler_scale": "bench_scheduler_scale.py",
    "data_path": "bench_data_path.py",
    "data_scale": "bench_data_scale.py",
    "inner_loop": "bench_inner_loop.py",
    "trial_overhead": "bench_trial_overhead.py",
    "search_efficiency": "bench_search_efficiency.py",
}


def _run(script: str, tmp: Path) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    args = [sys.executable, str(BENCH / script), "--quick"]
    if script in ("bench_search_efficiency.py", "bench_inner_loop.py", "bench_data_path.py"):
        args += ["--cache-dir", str(tmp / "cache")]
    proc = subprocess.run(args, cwd=BENCH.parent, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr[-4000:]}"
    json_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(json_lines) == 1, f"{script}: expected one JSON line on stdout, got:\n{proc.stdout[:2000]}"
    data = json.loads(json_lines[0])
    table = proc.stdout.split(json_lines[0], 1)[1].strip()
    assert "|---" in table, f"{script}: no markdown table after the JSON line"
    return {"key": data["bench"], "script": script, "rc": 0, "wall_s": time.perf_counter() - t0, "data": data,
            "table": table, "load_before": 0.0, "load_after": 0.0, "stderr_tail": ""}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("bench")
    return {key: _run(script, tmp) for key, script in SCRIPTS.items()}


@pytest.mark.slow
@pytest.mark.parametrize("key", list(SCRIPTS))
def test_quick_json(quick_results, key):
    data = quick_results[key]["data"]
    assert data["bench"] == key and data["quick"] is True
    if key == "fisher":
        assert data["agree"] and data["speedup"] > 0
    elif key == "scheduler_scale":
        assert data["rows"] and all(r["driver_ms"] > 0 for r in data["rows"])
        # the same study through Ray Tune: every trial started, TPE timed inside that run
        assert data["ray_trials_started"] == data["trials"]
        assert all(r["ray_ms"] > 0 and r["ray_tpe_ms"] > 0 for r in data["rows"])
    elif key == "data_path":
        assert data["rows"][0]["packed_s"] > 0 and data["rows"][0]["jpeg_s"] > 0
    elif key == "data_scale":  # both storage modes at both sizes, each trial's memory measured
        assert {(r["n"], r["mode"]) for r in data["rows"]} == {(n, m) for n in (500, 1000) for m in ("memory", "mapped")}
        assert all(r["trial_peak_anon_mb"] > 0 for r in data["rows"]) and data["mapped_trial_private_ratio"] > 0
    elif key == "inner_loop":
        assert data["bare_sps"] > 0 and data["project_train_sps"] > 0 and data["project_with_eval_sps"] > 0
    elif key == "trial_overhead":
        assert all(v["errors"] == 0 and v["trials"] == data["trials"] for v in data["variants"].values())
    elif key == "search_efficiency":
        assert data["a_trials"]["mean"] >= 1 and data["b_trials"]["mean"] >= 1
        assert isinstance(data["a_test_min_auc"]["mean"], float) and isinstance(data["b_test_min_auc"]["mean"], float)


@pytest.mark.slow
def test_run_all_report(quick_results):
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    info = run_all.machine()
    assert info["nproc"] and info["cpu"]
    text = run_all.report(list(quick_results.values()), info, quick=True, total_s=1.0)
    assert "notes unavailable" not in text
    for _, script, title, _ in run_all.BENCHES:
        assert title in text and script in text
