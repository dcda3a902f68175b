"""``fairtune-ray report <run folder | MLflow parent run id>``: write the search's HTML report."""
from __future__ import annotations

import argparse


def cmd_report(args) -> int:
    from fairtune_ray.reporting.report import report_target  # lazy: MLflow and matplotlib

    path = report_target(args.target, tracking_uri=args.tracking_uri, out=args.out)
    print(f"report: {path.resolve()}")
    return 0


def register(subparsers) -> None:
    sp = subparsers.add_parser(
        "report", help="write report.html (tables and plots) for a search and log it to its MLflow parent run",
        description="Render a search's report.html (results table, Pareto plot, mask heat map, per-group ROC curves, "
                    "objective per epoch with ASHA stops, Fisher disparity) into the run folder, with every image "
                    "embedded, and log the figures and the HTML to the search's MLflow parent run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  fairtune-ray report runs/synthetic-derm-20261122-101500\n"
               "  fairtune-ray report 3f2a...c9 --tracking-uri http://127.0.0.1:5000")
    sp.add_argument("target", help="a run folder (runs/<name>) or the 32-character id of the search's MLflow parent run")
    sp.add_argument("--tracking-uri", help="MLflow tracking URI (default: the run folder's, $MLFLOW_TRACKING_URI, "
                                           "or sqlite:///mlruns.db)")
    sp.add_argument("--out", help="with a run id: folder to download the artifacts into (default runs/mlflow-<id8>)")
    sp.set_defaults(func=cmd_report)
