"""Smoke test of the benchmark scripts: each runs with --quick and prints one parseable JSON line,
and run_all can write its report (with the notes) from those results. Slow: about a minute on 2 cores.
The three scripts whose quick modes start Ray studies (trial overhead, search efficiency, data at scale:
2.5 minutes together) run in `make bench` only; here they are imported and parse their arguments."""
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
    "inner_loop": "bench_inner_loop.py",
}
#: run by ``make bench`` only: their quick modes start Ray studies (37-72 s each on 2 cores), which the suite's
#: 15-minute budget cannot hold; here they are only imported and their arguments parsed (``--help``)
BENCH_ONLY = {
    "trial_overhead": "bench_trial_overhead.py",
    "search_efficiency": "bench_search_efficiency.py",
    "data_scale": "bench_data_scale.py",
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
    elif key == "inner_loop":
        assert data["bare_sps"] > 0 and data["project_train_sps"] > 0 and data["project_with_eval_sps"] > 0


@pytest.mark.slow
def test_run_all_report(quick_results):
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    info = run_all.machine()
    assert info["nproc"] and info["cpu"]
    text = run_all.report(list(quick_results.values()), info, quick=True, total_s=1.0)
    assert "notes unavailable" not in text
    for key, script, title, _ in run_all.BENCHES:
        assert (title in text and script in text) == (key in SCRIPTS), key
    assert {k for k, *_ in run_all.BENCHES} == set(SCRIPTS) | set(BENCH_ONLY)


@pytest.mark.slow
@pytest.mark.parametrize("script", list(BENCH_ONLY.values()))
def test_bench_only_scripts_import_and_parse_their_arguments(script):
    proc = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=BENCH.parent, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "--quick" in proc.stdout, proc.stderr[-2000:]
