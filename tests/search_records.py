"""What a finished or interrupted search left behind, read back for the end-to-end tests: Tune's trial
states and the MLflow parent and child runs. Also the ``--set`` arguments that start such a search."""
from __future__ import annotations

import glob
import json
from pathlib import Path

from mlflow.tracking import MlflowClient

#: settings for a search whose baselines and test intervals the test does not read
QUIET = {"search.baselines": [], "search.bootstrap": 10, "search.retrain_seeds": 1}


def trial_states(exp_dir: Path) -> dict[str, dict]:
    """{trial_id: {"status", "num_failures"}} from Tune's newest experiment-state file."""
    files = sorted(glob.glob(str(exp_dir / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        data = json.loads(Path(files[-1]).read_text())
    except (OSError, json.JSONDecodeError):  # being rewritten
        return {}
    out = {}
    for trial_json, runtime_json in data["trial_data"]:
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        out[trial["trial_id"]] = {"status": trial["status"], "num_failures": runtime["num_failures"]}
    return out


def children(uri: str, parent_name: str, experiment: str = "fairtune-ray"):
    """(client, parent run, child runs) of the one search run named ``parent_name``."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`fairtune.role` = 'search'")
    parents = [p for p in parents if p.info.run_name == parent_name]
    assert len(parents) == 1, [p.info.run_name for p in parents]
    kids = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    return client, parents[0], kids


def cli_args(overrides: dict) -> list[str]:
    """``--set key=value`` arguments for ``fairtune-ray search`` (lists as JSON, which YAML reads)."""
    args = []
    for k, v in overrides.items():
        args += ["--set", f"{k}={json.dumps(v) if isinstance(v, list) else v}"]
    return args
