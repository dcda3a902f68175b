"""The fractional-GPU memory cap: its arithmetic, and what reaches torch (no GPU needed)."""
import pytest
import torch

from fairtune_ray.config import load_config
from fairtune_ray.config.search import CUDA_CONTEXT_MB
from fairtune_ray.training.process import (
    MIB,
    allocator_cap_bytes,
    allocator_fraction,
    cap_gpu_memory,
    prepare_trial_process,
)

A10G = 23028 * MIB  # what nvidia-smi reports for the 24 GB A10G of a g5.xlarge
H200 = 143771 * MIB


def test_cap_is_the_share_minus_the_context():
    assert allocator_cap_bytes(0.25, A10G, 500) == int(0.25 * A10G) - 500 * MIB
    assert allocator_fraction(0.25, A10G, 500) == pytest.approx((0.25 * 23028 - 500) / 23028)
    assert allocator_fraction(0.25, A10G, 0) == pytest.approx(0.25)
    assert CUDA_CONTEXT_MB == 500 and allocator_cap_bytes(0.25, A10G) == allocator_cap_bytes(0.25, A10G, 500)


def test_four_quarter_trials_and_their_contexts_fit_the_card():
    caps = [allocator_cap_bytes(0.25, A10G, 500) for _ in range(4)]
    assert sum(caps) + 4 * 500 * MIB <= A10G
    assert sum(caps) + 4 * 500 * MIB > A10G - 4  # and use all of it (bytes rounded down per trial)


def test_share_of_a_smaller_card_on_a_bigger_device():
    """How gpu_check.py emulates a g5.xlarge trial on an H200: the same bytes, a smaller fraction."""
    fraction = allocator_fraction(0.25, A10G, 500, device_bytes=H200)
    assert fraction * H200 == pytest.approx(allocator_cap_bytes(0.25, A10G, 500))


def test_a_share_below_the_context_is_refused_with_the_keys_to_change():
    with pytest.raises(ValueError, match="trial.resources.cuda_context_mb"):
        allocator_cap_bytes(0.01, 16 * 1024 * MIB, 500)


def _fake_gpu(monkeypatch, total: int) -> list:
    class Props:
        total_memory = total

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=0: Props())
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, device=0: calls.append((f, device)))
    return calls


def test_cap_gpu_memory_passes_the_fraction_to_torch(monkeypatch):
    calls = _fake_gpu(monkeypatch, A10G)
    assert cap_gpu_memory(0.25, 500) is True
    assert calls == [(pytest.approx((0.25 * 23028 - 500) / 23028), 0)]
    assert cap_gpu_memory(1.0) is False and cap_gpu_memory(0.0) is False and len(calls) == 1


def test_cap_gpu_memory_emulating_a_smaller_card(monkeypatch):
    calls = _fake_gpu(monkeypatch, H200)
    cap_gpu_memory(0.25, 500, share_of_bytes=A10G)
    assert calls[0][0] * H200 == pytest.approx(0.25 * A10G - 500 * MIB)


def test_trial_process_uses_the_configured_context(monkeypatch):
    calls = _fake_gpu(monkeypatch, A10G)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    cfg = load_config(None, overrides={"trial.resources.gpu": 0.25, "trial.resources.cuda_context_mb": 800})
    prepare_trial_process(cfg)
    assert calls == [(pytest.approx((0.25 * 23028 - 800) / 23028), 0)]
