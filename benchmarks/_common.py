"""Helpers shared by the benchmark scripts (not a benchmark itself).

Every script prints exactly ONE JSON line on stdout (starting with ``{"bench":``), then a short
markdown table. Ray, Tune and MLflow write progress to stdout too, so scripts run their work
inside :func:`quiet_stdout`, which points file descriptor 1 at stderr until the result is printed.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import time
from typing import Iterator, Sequence

# Before Ray is imported anywhere: the classic Tune output, no per-trial CSV/JSON/TensorBoard
# loggers (the search does not use them), no log de-duplication.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
os.environ.setdefault("PYTHONWARNINGS", "ignore")


#: The data and training settings the speed benchmarks measure (the demo's defaults before it moved to
#: FairTune's regime: 60/20/20 splits only, batch 128, flips, shuffled batches, lr 5e-4), so their figures
#: stay comparable across runs of RESULTS.md.
BENCH_SETTINGS = {"data.synthetic.val_samples": 0, "data.synthetic.test_samples": 0, "data.batch_size": 128,
                  "data.augment": True, "data.group_balanced": False, "train.lr": 5e-4}


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send everything written to stdout (also by C code and child processes) to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def emit(result: dict, table: str) -> None:
    """The one JSON line, a blank line, then the markdown table."""
    sys.stdout.write(json.dumps(result, default=_json_default) + "\n\n" + table.rstrip() + "\n")
    sys.stdout.flush()


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def env_info(threads: int | None = None) -> dict:
    import torch

    return {"nproc": os.cpu_count(), "threads": threads if threads is not None else torch.get_num_threads(),
            "load_avg_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__,
            "python": platform.python_version()}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None and v == v]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt_ms(values: Sequence[float]) -> str:
    m, s = mean_sd(values)
    if m != m:
        return "n/a"
    return f"{m:.3f} ± {s:.3f}" if len(values) > 1 else f"{m:.3f}"


def init_local_ray(num_cpus: int = 2) -> None:
    """A private local Ray instance (own short temp dir, so other Ray users on the machine do not
    collide with it); one retry, since a loaded machine can make the node's start-up time out."""
    import tempfile

    import ray

    if ray.is_initialized():
        return
    for attempt in (1, 2):
        temp_dir = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short: Ray's socket paths have a length limit
        atexit.register(_remove_ray_dir, temp_dir)
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=True,
                     logging_level="ERROR", _temp_dir=temp_dir)
            return
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception on a start-up timeout
            ray.shutdown()
            if attempt == 2:
                raise
            print(f"ray.init failed ({err}); retrying once", file=sys.stderr)
            time.sleep(5)


def _remove_ray_dir(path: str) -> None:
    import ray

    ray.shutdown()
    shutil.rmtree(path, ignore_errors=True)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0


def make_noop(reports: int):
    """A trainable that does no work: reports ``reports`` epochs of a made-up objective computed
    from the configuration (mask bits and lr), so that TPE and ASHA have something to rank."""
    import math

    from ray import tune

    from fairtune_ray.search.tune_value import TUNE_METRIC

    def noop_trial(config: dict) -> None:
        bits = sum(v for k, v in config.items() if k.startswith("m"))
        base = -abs(math.log10(config["lr"]) + 3.5) + 0.01 * bits
        for epoch in range(1, reports + 1):  # rising, so the best so far is the current value
            value = base + 0.01 * epoch
            tune.report({"epoch": epoch, "objective": value, TUNE_METRIC: value})

    return noop_trial
