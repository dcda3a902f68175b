"""Bad input reaches the user as one ``error:`` line and exit code 2, never a traceback, and a bad
mask is found before any data are loaded or any backbone is pre-trained."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import ray

from fairtune_ray.cli import main
from fairtune_ray.common.errors import InputError
from fairtune_ray.config import ConfigError
from fairtune_ray.fisher.cache import FisherUnavailableError
from fairtune_ray.models import CheckpointError, MaskSpaceError

WRONG_LENGTH = "attn_mlp_norm:101"  # the micro backbone's attn_mlp_norm space has 18 bits


def _sets(overrides: dict) -> list[str]:
    return [arg for k, v in overrides.items() for arg in ("--set", f"{k}={v}")]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("cls", [ConfigError, MaskSpaceError, CheckpointError, FisherUnavailableError])
def test_bad_input_errors_share_one_base_and_stay_value_errors(cls):
    assert issubclass(cls, InputError) and issubclass(cls, ValueError)


def test_fisher_unavailable_is_still_a_runtime_error():
    assert issubclass(FisherUnavailableError, RuntimeError)


@pytest.mark.parametrize("pair, expected", [
    ("train.epochs", "--set expects key=value"),
    ("=3", "--set expects key=value"),
    ("train.lr=[1,", "--set train.lr: '[1,' is not a YAML value"),
])
def test_malformed_set_is_one_error_line(pair, expected, capsys):
    assert main(["finetune", "--set", pair]) == 2
    assert expected in _one_error_line(capsys.readouterr().err)


def test_one_bad_config_key_is_one_line(capsys):
    assert main(["finetune", "--set", "train.epochz=3"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "train.epochz: unknown key" in line


def test_unknown_backbone_is_a_config_error(tmp_path, capsys):
    assert main(["finetune", *_sets({"backbone.name": "no_such_timm_model", "data.cache_dir": tmp_path})]) == 2
    assert "backbone.name" in _one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_wrong_length_mask_fails_before_data_and_pretraining(tmp_path):
    """A fresh process with an empty cache: no synthetic data generated, no backbone pre-trained."""
    cache = tmp_path / "cache"
    cache.mkdir()
    cmd = [sys.executable, "-c", "import sys; from fairtune_ray.cli import main; sys.exit(main())",
           "finetune", "--mask", WRONG_LENGTH, "--set", f"data.cache_dir={cache}"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - t0
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr)
    assert line.startswith("error: --mask:") and "'attn_mlp_norm'" in line and "expects 18 bits" in line
    assert "got 3 characters" in line
    assert not list(cache.rglob("*.pt")) and list(cache.iterdir()) == []  # nothing pre-trained, nothing generated
    assert elapsed < 60  # seconds of imports, not minutes of pre-training


def test_mask_with_other_characters_is_a_config_error(tmp_path, capsys):
    bits = "01" * 8 + "2x"
    assert main(["finetune", "--mask", f"attn_mlp_norm:{bits}", "--set", f"data.cache_dir={tmp_path}"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--mask" in line and "expects 18 bits" in line and "'2x'" in line
    assert list(tmp_path.iterdir()) == []


def test_mask_in_config_is_checked_before_the_search(tiny_overrides, capsys):
    rc = main(["search", *_sets({**tiny_overrides, "search.baselines": ["full", WRONG_LENGTH]})])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "search.baselines[1]" in line and "expects 18 bits" in line
    assert not ray.is_initialized()


def test_unloadable_checkpoint_is_one_error_line(tiny_overrides, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a weights file")
    rc = main(["finetune", "--mask", "linear", *_sets({**tiny_overrides, "backbone.checkpoint": junk})])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "junk.pt" in line and "not a loadable weights file" in line


def test_missing_dataset_is_one_error_line(tmp_path, capsys):
    rc = main(["finetune", *_sets({"data.source": tmp_path / "nowhere", "data.cache_dir": tmp_path / "cache"})])
    assert rc == 2
    assert "nowhere" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("damage", ["manifest.parquet", "dataset.json", "shard"])
def test_a_damaged_prepared_dataset_is_one_error_line_naming_the_file(tmp_path, damage, capsys):
    import numpy as np
    import pandas as pd

    from fairtune_ray.data.manifest import DatasetInfo, write_packed_dataset

    n = 30
    manifest = pd.DataFrame({"image": [f"{i}.png" for i in range(n)], "label": np.arange(n) % 2,
                             "sex": (np.arange(n) // 2) % 2, "patient_id": [f"p{i}" for i in range(n)],
                             "split": np.array(["train", "val", "test"])[np.arange(n) % 3]})
    images = (np.full((8, 8, 3), i, np.uint8) for i in range(n))
    write_packed_dataset(str(tmp_path / "ds"), manifest, images, DatasetInfo("toy", {"sex": {0: "F", 1: "M"}}),
                         shard_size=10)
    path = (sorted((tmp_path / "ds" / "shards").iterdir())[0] if damage == "shard" else tmp_path / "ds" / damage)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    args = ["finetune", "--mask", "linear", *_sets({"data.source": tmp_path / "ds", "data.sensitive_attribute": "sex",
                                                    "data.cache_dir": tmp_path / "cache"})]
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(path) in line and "data prepare" in line


def test_small_intersectional_groups_rejected_before_the_search(tiny_overrides, capsys):
    """The tests' synthetic data by skin tone x sex: the dark cells have 4 test images each."""
    rc = main(["search", *_sets({**tiny_overrides, "data.sensitive_attribute": "[skin_tone, sex]",
                                 "data.min_group_size": 5, "data.small_groups": "reject"})])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "data.small_groups" in line and "data.min_group_size=5" in line and "'skin_tone × sex'" in line
    assert "dark × M (train 26, val 10, test 4)" in line
    assert not ray.is_initialized()
