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
