"""The cached pre-trained micro backbone is reused only while its SHA-256 is the one recorded when it
was written; an altered or unrecorded file is pre-trained again (a tiny backbone: seconds on the CPU)."""
from __future__ import annotations

import pytest

from fairtune_ray.config import load_config
from fairtune_ray.models import create_backbone
from fairtune_ray.models.shipping import file_sha256
from fairtune_ray.training.pretrain import (
    digest_path,
    digest_problem,
    ensure_pretrained,
)

TINY_PRETRAIN = {"backbone.micro.width": 16, "backbone.micro.depth": 1, "backbone.micro.heads": 1,
                 "backbone.pretrain_epochs": 1, "data.synthetic.source_samples": 100, "train.threads": 1}


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, overrides={**TINY_PRETRAIN, "data.cache_dir": str(tmp_path)})


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_cached_backbone_is_reused_while_its_digest_holds(cfg):
    logs: list[str] = []
    path = ensure_pretrained(cfg, log=logs.append)
    assert digest_path(path).read_text().strip() == file_sha256(path) and digest_problem(path) == ""
    logs.clear()
    assert ensure_pretrained(cfg, log=logs.append) == path and logs == []  # reused, not pre-trained again


def test_altered_cached_backbone_is_detected_and_pretrained_again(cfg):
    path = ensure_pretrained(cfg, log=lambda *_: None)
    _flip_a_byte(path)
    assert "SHA-256" in digest_problem(path)
    logs: list[str] = []
    assert ensure_pretrained(cfg, log=logs.append) == path
    assert any(str(path) in line and "pre-training it again" in line for line in logs)
    assert digest_problem(path) == ""
    create_backbone(cfg.backbone, num_classes=1, checkpoint=path)  # loads: a complete weights file


def test_cached_backbone_without_a_recorded_digest_is_not_trusted(cfg):
    path = ensure_pretrained(cfg, log=lambda *_: None)
    digest_path(path).unlink()
    assert "no SHA-256 was recorded" in digest_problem(path)
    logs: list[str] = []
    ensure_pretrained(cfg, log=logs.append)
    assert any("pre-training it again" in line for line in logs) and digest_problem(path) == ""
