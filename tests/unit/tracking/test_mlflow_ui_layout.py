"""What the MLflow UI opens on: the experiment is a training experiment (runs table, not the GenAI
overview), and every run carries a concise description. A real SQLite store in tmp_path."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from urllib.parse import parse_qs, urlsplit

from fairtune_ray.tracking import (
    EXPERIMENT_KIND_TAG, NOTE_TAG, TRAINING_KIND, ChildRunLogger, experiment_id, finish_child_runs, model_sentence,
    search_description, start_parent_run, trials_link, ui_hint,
)


@pytest.fixture
def uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default artifact root (./mlruns) stays in tmp_path
    return f"sqlite:///{tmp_path / 'mlruns.db'}"


def _kind(uri: str, name: str) -> str:
    return MlflowClient(uri).get_experiment_by_name(name).tags.get(EXPERIMENT_KIND_TAG)


def test_a_new_experiment_is_a_training_experiment(uri):
    assert TRAINING_KIND == "custom_model_development"  # MLflow's ExperimentKind.CUSTOM_MODEL_DEVELOPMENT
    start_parent_run(uri, "fresh", "search", params={})
    assert _kind(uri, "fresh") == TRAINING_KIND


def test_an_existing_experiment_without_a_kind_gets_one(uri):
    client = MlflowClient(uri)
    exp = client.create_experiment("older", tags={"team": "derm"})
    assert _kind(uri, "older") is None
    assert experiment_id(client, "older") == exp
    assert _kind(uri, "older") == TRAINING_KIND
    assert client.get_experiment(exp).tags["team"] == "derm"


def test_a_kind_the_user_chose_is_kept(uri):
    client = MlflowClient(uri)
    client.create_experiment("mine", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    start_parent_run(uri, "mine", "search", params={})
    assert _kind(uri, "mine") == "genai_development"


def test_parent_and_child_runs_describe_themselves(uri):
    text = search_description("demo", "fairtune", "attn_mlp_norm", 8, "min_auc")
    parent = start_parent_run(uri, "described", "demo", params={}, tags={"fairtune.objective": "min_auc"},
                              description=text)
    client = MlflowClient(uri)
    run = client.get_run(parent)
    note = run.data.tags[NOTE_TAG]
    assert "`fairtune`" in note and "`attn_mlp_norm` mask space" in note and "8 trials" in note and "min_auc" in note
    # ends with a link to the trials: flat (filtered on the parent), best first, in the model-training view
    exp = run.info.experiment_id
    assert f"Trials: [runs table, best first](#/experiments/{exp}/runs?workflowType=machine_learning&" in note
    assert "&compareRunsMode=CHART)" in note

    params = {"mask": "attn_mlp_norm:010110", "space": "attn_mlp_norm", "lr": 2e-4, "peft": "mask"}
    child = ChildRunLogger(uri, parent, "t_00000", "attn_mlp_norm[3/6]", params)
    assert client.get_run(child.run_id).data.tags[NOTE_TAG].startswith("Trial `t_00000`: mask `010110`")
    assert "**running**" in client.get_run(child.run_id).data.tags[NOTE_TAG]
    for epoch, value in ((1, 0.61), (2, 0.7)):
        child.log_epoch(epoch, {"val/min_auc": value, "objective": value, "best_objective": value,
                                "best_epoch": epoch, "train/loss": 0.5})
    note = client.get_run(child.run_id).data.tags[NOTE_TAG]
    assert "Best validation `min_auc`: 0.7000 (epoch 2)" in note and "lr 2.00e-04" in note
    child.finish("completed")
    run = client.get_run(child.run_id)
    assert "**completed**" in run.data.tags[NOTE_TAG] and run.info.run_name == "attn_mlp_norm[3/6]"
    assert [m.step for m in client.get_metric_history(child.run_id, "val/min_auc")] == [1, 2]

    lora = ChildRunLogger(uri, parent, "t_00001", "lora", {"mask": "lora", "lr": 1e-3, "peft": "lora",
                                                         "peft_rank": 4})
    lora.log_epoch(1, {"best_objective": 0.55, "best_epoch": 1})
    # the driver knows what the trial cannot: ASHA stopped it
    assert finish_child_runs(uri, parent, {"t_00001": ("stopped_early", "stopped by ASHA after epoch 1")}) == 1
    run = client.get_run(lora.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["fairtune.status"] == "stopped_early"  # no failure icon
    note = run.data.tags[NOTE_TAG]
    assert note == "Trial `t_00001`: PEFT `lora` r=4, lr 1.00e-03. Status: **stopped early**. " \
                   "Best validation `min_auc`: 0.5500 (epoch 1)."


@pytest.mark.parametrize("objective, ascending", [("min_auc", "false"), ("auc_gap + eodds_diff", "true")])
def test_the_trials_link_lists_the_trials_best_first(uri, objective, ascending):
    parent = start_parent_run(uri, "linked", "s", params={}, tags={"fairtune.objective": objective})
    link = trials_link(uri, parent)
    base, _, route = link.partition("/#")
    assert base == "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store
    parts = urlsplit(route)
    exp = MlflowClient(uri).get_run(parent).info.experiment_id
    assert parts.path == f"/experiments/{exp}/runs"
    assert parse_qs(parts.query) == {"workflowType": ["machine_learning"],
                                     "searchFilter": [f"tags.`mlflow.parentRunId` = '{parent}'"],
                                     "orderByKey": ["metrics.`best_objective`"], "orderByAsc": [ascending]}
    assert ui_hint(uri, parent) == f"mlflow ui --backend-store-uri {uri}, then open {link}"


def test_the_model_sentence_links_the_logged_model_page():
    line = model_sentence("models:/m-0123abc", "7", "/runs/demo/model")
    assert line == ("Model: [`models:/m-0123abc`](#/experiments/7/models/m-0123abc?workflowType=machine_learning) "
                    "(logged model), folder `/runs/demo/model`.")
    assert model_sentence(None, "7", None) == "Model: not exported."
    assert model_sentence("models:/derm/3") == "Model: `models:/derm/3`."
