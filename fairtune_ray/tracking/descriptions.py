"""What the MLflow UI shows first: the experiment's kind, each run's description, links into the runs table.

MLflow 3 names an experiment's kind in the experiment tag ``mlflow.experimentKind``;
``custom_model_development`` ("Machine learning" in the UI's kind selector) is a training experiment,
whose default tab is the runs table. The UI of MLflow 3.17 still opens every experiment in the workflow
chosen by its "GenAI | Model training" toggle (the URL parameter ``workflowType``, else the browser's
last choice, GenAI by default), i.e. on the GenAI overview (traces, token usage); newer UIs follow the
kind. So the links this project prints and writes carry ``workflowType=machine_learning``. A search's
trials are nested runs, folded under the parent in the runs table, and the chart view draws only
visible runs: the trials link filters on the parent (``tags.`mlflow.parentRunId```), which lists them
flat, best first, so the chart view compares their per-epoch curves. A run's description is its tag
``mlflow.note.content`` (markdown, shown on the run page).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional
from urllib.parse import urlencode

__all__ = ["EXPERIMENT_KIND_TAG", "MODEL_URI_TAG", "NOTE_TAG", "PARENT_TAG", "TRAINING_KIND", "UI_ADDRESS",
           "child_description", "model_sentence", "search_description", "trials_route", "trials_sentence", "ui_base"]

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: the kind of a classic training experiment (MLflow's ExperimentKind.CUSTOM_MODEL_DEVELOPMENT)
TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"
MODEL_URI_TAG = "fairtune.model_uri"  # on the parent run: the selected model's models:/<model id> URI
PARENT_TAG = "mlflow.parentRunId"
#: where ``mlflow ui`` serves by default
UI_ADDRESS = "http://127.0.0.1:5000"
_TRAINING_VIEW = {"workflowType": "machine_learning"}


def _number(value) -> Optional[float]:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _method(params: Mapping[str, str]) -> str:
    """The trial's mask (space and bits on, or a named mask) and its PEFT method when adapters were placed."""
    mask, peft = str(params.get("mask", "?")), str(params.get("peft", "mask"))
    parts = []
    if ":" in mask:
        space, bits = mask.split(":", 1)
        parts.append(f"mask `{bits}` ({space}, {bits.count('1')}/{len(bits)} on)")
    elif mask != peft:
        parts.append(f"mask `{mask}`")
    if peft not in ("mask", "none"):
        rank = f" r={params['peft_rank']}" if params.get("peft_rank") not in (None, "", "None") else ""
        parts.append(f"PEFT `{peft}`{rank}")
    if str(params.get("factorise", "none")) not in ("none", ""):
        parts.append(f"Fisher low-rank r={params.get('rank')}")
    return ", ".join(parts)


def child_description(trial_id: str, params: Mapping[str, str], status: str, best: Optional[float] = None,
                      best_epoch: Optional[float] = None, objective: str = "objective") -> str:
    """A trial's note: mask/method, lr, status and its best validation objective so far."""
    lr = _number(params.get("lr"))
    parts = [f"Trial `{trial_id}`: {_method(params)}, lr {lr:.2e}" if lr is not None else
             f"Trial `{trial_id}`: {_method(params)}"]
    parts.append(f"Status: **{status.replace('_', ' ')}**.")
    value, epoch = _number(best), _number(best_epoch)
    if value is not None:
        at = f" (epoch {int(epoch)})" if epoch is not None else ""
        parts.append(f"Best validation `{objective}`: {value:.4f}{at}.")
    return parts[0] + ". " + " ".join(parts[1:])


def search_description(name: str, method: str, space: str, trials: int, objective: str) -> str:
    """The parent run's note while the search runs (publish and report replace it with the outcome)."""
    return (f"Search `{name}`: `{method}` over the `{space}` mask space, {trials} trials (TPE + ASHA), "
            f"selecting by validation `{objective}`. Running; the selected model and its test results follow.")


def ui_base(tracking_uri: str) -> str:
    """The UI's address: the tracking server itself, or ``mlflow ui``'s default for a local store."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else UI_ADDRESS


def trials_route(experiment_id: str, parent_run_id: str, mode: str = "max") -> str:
    """The UI route (the part after ``#``) of a search's trials: the runs table of the model-training view,
    filtered on the parent run so the trials are listed flat, best validation objective first (the
    ``best_objective`` metric every trial logs per epoch); add ``&compareRunsMode=CHART`` for the charts."""
    query = urlencode({**_TRAINING_VIEW, "searchFilter": f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                       "orderByKey": "metrics.`best_objective`", "orderByAsc": "true" if mode == "min" else "false"})
    return f"/experiments/{experiment_id}/runs?{query}"


def trials_sentence(experiment_id: str, parent_run_id: str, mode: str = "max") -> str:
    """A markdown line linking a parent run's description to its trials in the runs table and the charts."""
    route = trials_route(experiment_id, parent_run_id, mode)
    return (f"Trials: [runs table, best first](#{route}); [charts](#{route}&compareRunsMode=CHART) "
            f"comparing their per-epoch metrics.")


def model_sentence(model_uri: Optional[str], experiment_id: Optional[str] = None, folder: Optional[str] = None) -> str:
    """Where the selected model is: its MLflow logged model (a link into the UI) and its run-folder copy."""
    if not model_uri and not folder:
        return "Model: not exported."
    where = []
    if model_uri:
        model_id = model_uri[len("models:/"):] if model_uri.startswith("models:/") else ""
        if experiment_id and model_id.startswith("m-"):  # the UI's logged-model page
            where.append(f"[`{model_uri}`](#/experiments/{experiment_id}/models/{model_id}?"
                         f"{urlencode(_TRAINING_VIEW)}) (logged model)")
        else:
            where.append(f"`{model_uri}`")
    if folder:
        where.append(f"folder `{folder}`")
    return "Model: " + ", ".join(where) + "."
