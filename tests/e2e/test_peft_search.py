"""A search with the ``peft`` dimension (mask, lora, ia3) on the tiny config: trials log their PEFT method,
the LoRA baseline is retrained, and the selected model exports and loads as a plain backbone."""
import pytest
from mlflow.tracking import MlflowClient

from fairtune_ray.config import load_config
from fairtune_ray.export.rebuild import ExportedModel
from fairtune_ray.study import run_search


@pytest.mark.slow
def test_search_with_a_peft_dimension(tiny_overrides, ray_local):
    cfg = load_config(None, overrides={**tiny_overrides, "search.num_samples": 5, "search.n_initial_points": 5,
                                       "peft.methods": ["mask", "lora", "ia3"], "peft.ranks": [2],
                                       "search.baselines": ["linear", "lora"], "search.export": "all"})  # models/lora too
    out = run_search(cfg, name="peft", report=False, log=lambda *_: None)

    client = MlflowClient(out.tracking_uri)
    parent = client.get_run(out.parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{out.parent_run_id}'")
    assert len(children) == 5
    by_trial = {t["trial_id"]: t for t in out.trials}
    for child in children:
        params = child.data.params
        config = by_trial[child.data.tags["ray_trial_id"]]["config"]
        assert params["peft"] == config["peft"]
        adapted = int(params["adapted_modules"])
        if config["peft"] == "mask":
            assert adapted == 0 and params["peft_targets"] == "none"
        else:
            assert params["peft_targets"] == config["peft_targets"] and params.get("peft_rank") in ("2", None)
            if not any(int(v) for k, v in config.items() if k.startswith("m") and k[1:].isdigit()):
                assert adapted == 0  # no group on: no adapter, the head alone
        assert int(params["trainable_params"]) > 0
    drawn = {c.data.params["peft"] for c in children}
    assert "mask" in drawn and drawn - {"mask"}, drawn  # the baseline points and some PEFT trials
    assert any(int(c.data.params["adapted_modules"]) > 0 for c in children)

    methods = [r.method for r in out.rows]
    assert methods == ["FairTune (selected)", "Linear probe", "LoRA"]
    lora = out.rows[2]
    assert lora.mask == "lora" and lora.trainable_params == 36961  # rank 4 in every block's qkv/proj/fc1/fc2 + head
    # the LoRA baseline's export merged its adapters: it rebuilds without peft layers and scores images
    model = ExportedModel(out.run_dir / "models" / "lora", device="cpu")
    assert model.meta["adapters"] == {"method": "lora", "merged": True}
    assert not any("lora_" in k for k in model.model.state_dict())
