"""The command line: errors name the key, and nothing starts Ray before the checks pass."""
import ray

from fairtune_ray.cli import main


def _args(overrides: dict) -> list[str]:
    out = []
    for k, v in overrides.items():
        out += ["--set", f"{k}={v}"]
    return out


def test_finetune_prints_group_tables(tiny_overrides, capsys):
    rc = main(["finetune", "--mask", "bitfit", "--epochs", "1", *_args(tiny_overrides)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "val (skin_tone)" in out and "test (skin_tone)" in out
    for group in ("light", "medium", "dark", "ALL"):
        assert f"| {group}" in out
    assert "worst-group AUC" in out


def test_finetune_with_peft_adapters_where_the_mask_is_on(tiny_overrides, capsys):
    bits = "010" + "0" * 15  # block 0's attention: its qkv and proj get LoRA adapters (rank 4)
    rc = main(["finetune", "--mask", f"attn_mlp_norm:{bits}", "--peft", "lora", "--epochs", "1", *_args(tiny_overrides)])
    assert rc == 0
    assert f"mask attn_mlp_norm:{bits} with lora adapters: {97 + 4 * (96 + 288) + 4 * (96 + 96):,} of" in capsys.readouterr().out
    assert main(["finetune", "--mask", "lora", "--epochs", "1", *_args(tiny_overrides)]) == 0  # the LoRA baseline
    assert "mask lora: 36,961 of" in capsys.readouterr().out


def test_finetune_with_peft_on_a_resnet_fails_before_loading(tiny_overrides, capsys):
    resnet = {**tiny_overrides, "backbone.name": "resnet10t"}
    assert main(["finetune", "--mask", "stage:0001", "--peft", "ia3", *_args(resnet)]) == 2
    assert "peft.targets: PEFT ['ia3'] on backbone 'resnet10t'" in capsys.readouterr().err


def test_unknown_objective_fails_before_search(tiny_overrides, capsys):
    rc = main(["search", *_args({**tiny_overrides, "train.objective": "best_auc"})])
    assert rc == 2
    err = capsys.readouterr().err
    assert "best_auc" in err and "train" in err
    assert not ray.is_initialized()


def test_mask_space_must_fit_backbone(tiny_overrides, capsys):
    rc = main(["search", *_args({**tiny_overrides, "mask.space": "stage"})])
    assert rc == 2
    err = capsys.readouterr().err
    assert "mask.space" in err and "stage" in err
    assert not ray.is_initialized()


def test_gpu_request_without_gpu_suggests_cpu(tiny_overrides, capsys):
    rc = main(["search", *_args({**tiny_overrides, "trial.resources.gpu": 0.25})])
    assert rc == 2
    err = capsys.readouterr().err
    assert "trial.resources.gpu" in err and "gpu: 0" in err
    assert not ray.is_initialized()


def test_unknown_config_key_exit_code(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  epochz: 3\n")
    assert main(["finetune", str(p)]) == 2
    assert "train.epochz" in capsys.readouterr().err
