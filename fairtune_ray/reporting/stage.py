"""The study's last stage: report.html in the run folder, logged to the MLflow parent run."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from fairtune_ray.reporting.report import write_report


def write_report_stage(run_dir: Path, tracking_uri: Optional[str], log: Callable = print) -> Path:
    path = write_report(run_dir, tracking_uri=tracking_uri, log=log)
    log(f"report: {path}")
    return path
