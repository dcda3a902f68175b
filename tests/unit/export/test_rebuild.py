"""model.json + safetensors rebuild the exact network, PEFT adapters (merged at export) and Fisher
low-rank factors included, without the pre-training checkpoint (no download, strict load)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from fairtune_ray.config import load_config
from fairtune_ray.data.manifest import DatasetInfo
from fairtune_ray.data.packed import PackedDataset
from fairtune_ray.export.capture import capture
from fairtune_ray.export.folder import find_model_folder, read_model_meta, write_model_folder
from fairtune_ray.data.fingerprint import dataset_fingerprint
from fairtune_ray.export.metadata import model_metadata
from fairtune_ray.export.rebuild import ExportedModel
from fairtune_ray.models import Mask, apply_mask, create_backbone
from fairtune_ray.models.lowrank import factorise_linears
from fairtune_ray.training.spec import TrialSpec


def _data(n: int = 6) -> PackedDataset:
    rng = np.random.default_rng(0)
    manifest = pd.DataFrame({"sample_id": np.arange(n), "image": [f"{i}.png" for i in range(n)], "label": [0, 1] * (n // 2),
                             "skin_tone": [0, 1, 2] * (n // 3), "patient_id": np.arange(n).astype(str),
                             "split": ["test"] * n})
    info = DatasetInfo("toy", {"skin_tone": {0: "light", 1: "medium", 2: "dark"}}, image_size=32, channels=3)
    return PackedDataset(manifest, rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), info)


def _export(tmp_path, spec: TrialSpec, model: torch.nn.Module, cfg) -> ExportedModel:
    with torch.no_grad():  # move every weight away from its initial value so a wrong rebuild shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    weights = capture(model)
    meta = model_metadata(cfg, spec, _data(), preprocess=weights.preprocess, provenance={"method": "toy"},
                          evidence={"test_metrics": {"min_auc": float("nan")}})
    write_model_folder(tmp_path / "model", weights.weights, meta)
    return ExportedModel(find_model_folder(tmp_path), device="cpu")


@pytest.mark.parametrize("spec", [TrialSpec(mask="attn_mlp_norm:" + "0" * 15 + "111", lr=1e-3),
                                  TrialSpec(mask="lora", lr=1e-3, peft="lora", peft_rank=2),
                                  TrialSpec(mask="attn_mlp_norm:" + "010" * 6, peft="dora", peft_rank=2),
                                  TrialSpec(mask="attn_mlp_norm:" + "011" * 6, peft="ia3"),
                                  TrialSpec(mask="full", rank=3, factorise=["qkv", "fc2"], ewc_lambda=0.1)],
                         ids=["mask", "lora", "dora", "ia3", "lowrank"])
def test_rebuilt_model_scores_like_the_trained_one(tmp_path, spec):
    cfg = load_config(None)
    model = create_backbone(cfg.backbone.model_copy(update={"pretrained": False}), num_classes=1)
    plain_keys = set(model.state_dict())
    apply_mask(model, Mask.parse(spec.mask, model=model), adapters=spec.adapters())
    if spec.rank:
        factorise_linears(model, None, spec.rank, spec.factorise)
    exported = _export(tmp_path, spec, model, cfg)
    images = np.asarray(_data().images)
    model.eval()
    with torch.no_grad():
        x = exported.transform(torch.from_numpy(images).permute(0, 3, 1, 2), train=False)
        direct = torch.sigmoid(model(x).view(-1)).numpy()
    np.testing.assert_allclose(exported.score(images), direct, atol=1e-6)
    np.testing.assert_allclose(exported.score(images.astype(np.float32)), direct, atol=1e-6)  # floats on 0-255
    np.testing.assert_allclose(exported.score(_data().images, batch_size=7), direct, atol=1e-6)  # rows, by batch
    # adapters are merged into the base weights at export: the exported model is a plain backbone
    assert set(exported.model.state_dict()) == (plain_keys if spec.peft_method else set(model.state_dict()))
    assert exported.meta["adapters"] == ({"method": spec.peft_method, "merged": True} if spec.peft_method else None)


def test_a_lora_model_exported_before_peft_still_loads(tmp_path):
    """The hand-written LoRA saved ``<layer>.lora_A`` / ``.lora_B`` (scaling 1): rebuilding merges them."""
    from fairtune_ray.export.rebuild import rebuild_model

    cfg = load_config(None)
    model = create_backbone(cfg.backbone.model_copy(update={"pretrained": False}), num_classes=1).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = torch.randn(2, 96), torch.randn(288, 2)
    state.update({"blocks.0.attn.qkv.lora_A": a, "blocks.0.attn.qkv.lora_B": b})
    meta = {"backbone": cfg.backbone.model_dump(), "spec": {"mask": "lora", "lr": 1e-3}, "lora_rank": 2}
    rebuilt = rebuild_model(meta, state)
    torch.testing.assert_close(rebuilt.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight + b @ a)


def test_model_json_is_strict_json_and_records_what_rebuilding_needs(tmp_path):
    cfg = load_config(None)
    model = create_backbone(cfg.backbone.model_copy(update={"pretrained": False}), num_classes=1)
    _export(tmp_path, TrialSpec(mask="linear"), model, cfg)
    meta = json.loads((tmp_path / "model" / "model.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert meta == read_model_meta(tmp_path / "model")
    assert meta["backbone"]["checkpoint"] is None and meta["backbone"]["pretrained"] is False
    assert meta["data"]["image_size"] == 32 and meta["data"]["sensitive_attribute"] == "skin_tone"
    assert meta["data"]["group_names"] == {"0": "light", "1": "medium", "2": "dark"}
    assert meta["threshold"] == 0.5 and meta["spec"]["mask"] == "linear" and meta["test_metrics"]["min_auc"] is None
    assert set(meta["versions"]) >= {"torch", "timm", "fairtune-ray"}
    assert meta["data_fingerprint"] == dataset_fingerprint(_data())


def test_fingerprint_changes_with_the_data():
    a, b = _data(), _data()
    b.manifest.loc[0, "label"] = 1
    c = _data()
    c.images.store[0, 0, 0, 0] ^= 1
    assert dataset_fingerprint(a) == dataset_fingerprint(_data())
    assert len({dataset_fingerprint(a), dataset_fingerprint(b), dataset_fingerprint(c)}) == 3
