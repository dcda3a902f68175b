"""benchmarks/gpu/gpu_check.py end to end on the CPU (--cpu-smoke: tiny sizes, no GPU parts), with
Ray and MLflow imports made to fail in it and its child processes, as on the GPU machine that has
neither. About 25 s on 2 cores: five short Python processes (one throughput, 1 + 2 trials)."""
import json
import os
import subprocess
import sys

from paths import REPO

SCRIPT = REPO / "benchmarks" / "gpu" / "gpu_check.py"


def test_cpu_smoke_runs_without_ray_or_mlflow(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--block-imports", "ray,mlflow",
                           "--out", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=180, env=env)
    log = (tmp_path / "children.log").read_text() if (tmp_path / "children.log").is_file() else ""
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{log[-4000:]}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"bench": "gpu_check"')]
    assert len(lines) == 1 and "|---" in proc.stdout
    result = json.loads(lines[0])
    assert result == json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["blocked_imports"] == ["ray", "mlflow"] and result["failed"] == []
    a = result["throughput"]
    assert a["exit"] == 0 and a["project_train_sps"] > 0 and a["bare_sps"] > 0
    b = result["packing"]
    assert len(b["single"]["results"]) == 1 and len(b["concurrent"]["results"]) == 2
    assert b["single"]["results"][0]["threads"] == 4
    assert all(r["threads"] == 1 and r["fit_s"] > 0 and r["capped"] is False for r in b["concurrent"]["results"])
    assert b["single_trials_per_hour"] > 0 and b["concurrent_trials_per_hour"] > 0
    f = result["fisher"]  # the Fisher pass against a training epoch, without Ray or MLflow too
    assert f["exit"] == 0 and f["hooks_s"] > 0 and f["vmap_s"] > 0 and f["hooks_over_epoch"] > 0
    assert (tmp_path / "gpu_check.md").read_text().startswith("GPU check:")
