"""Tests for fairtune_ray.models.lowrank (Fisher-weighted SVD and LowRankLinear)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fairtune_ray.models.lowrank import LowRankLinear, factorise_linears, fisher_weighted_svd, resolve_linear_targets

timm = pytest.importorskip("timm")


def _W(m=12, n=9, seed=0):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _plain_svd(W, r):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]


def _micro_vit(num_classes=1):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4,
        embed_dim=32, depth=2, num_heads=2, num_classes=num_classes,
    ).eval()  # fmt: skip


@pytest.mark.parametrize("importance", ["none", "ones", "const"])
def test_uniform_importance_is_plain_truncated_svd(importance):
    W = _W()
    imp = {"none": None, "ones": torch.ones_like(W), "const": torch.full_like(W, 3e-7)}[importance]
    for r in (1, 3, 5):
        A, B = fisher_weighted_svd(W, imp, r)
        assert A.shape == (12, r) and B.shape == (r, 9)
        assert torch.allclose(A @ B, _plain_svd(W, r), atol=1e-10)
        assert torch.allclose(B @ B.T, torch.eye(r, dtype=W.dtype), atol=1e-10)  # B = V_r^T


def test_full_rank_reproduces_W_and_rank_is_clipped():
    W = _W().float()
    imp = torch.rand(12, 9)
    A, B = fisher_weighted_svd(W, imp, rank=9)
    assert A.dtype == W.dtype and torch.allclose(A @ B, W, atol=1e-5)
    A2, B2 = fisher_weighted_svd(W, imp, rank=100)
    assert A2.shape == (12, 9) and torch.allclose(A2 @ B2, W, atol=1e-5)
    with pytest.raises(ValueError):
        fisher_weighted_svd(W, torch.rand(9, 12), 2)


def test_weighted_error_not_worse_than_plain_svd():
    W = _W(16, 10, seed=3)
    g = torch.Generator().manual_seed(4)
    imp = torch.rand(16, 10, generator=g, dtype=torch.float64) ** 4 * torch.logspace(-3, 1, 16, dtype=torch.float64)[:, None]
    s = imp.sum(1).sqrt()
    for r in (1, 2, 4, 7):
        A, B = fisher_weighted_svd(W, imp, r)
        err_fw = torch.linalg.norm(s[:, None] * (W - A @ B))
        err_plain = torch.linalg.norm(s[:, None] * (W - _plain_svd(W, r)))
        assert err_fw <= err_plain + 1e-12
        # it is the Eckart-Young optimum of diag(s) W
        tail = torch.linalg.svdvals(s[:, None] * W)[r:]
        assert torch.isclose(err_fw, tail.norm(), rtol=1e-8)
    assert err_fw < 0.99 * err_plain  # strictly better for this strongly non-uniform weighting


def test_zero_importance_rows_are_guarded():
    W = _W()
    imp = torch.rand(12, 9, dtype=torch.float64)
    imp[[0, 5]] = 0.0
    A, B = fisher_weighted_svd(W, imp, 4)
    assert torch.isfinite(A).all() and torch.isfinite(B).all()
    A0, B0 = fisher_weighted_svd(W, torch.zeros_like(W), 4)  # all zero -> plain SVD
    assert torch.allclose(A0 @ B0, _plain_svd(W, 4), atol=1e-10)


def test_lowrank_linear_forward_and_counts():
    torch.manual_seed(0)
    lin = nn.Linear(9, 12)
    for r in (1, 3, 9):
        lr = LowRankLinear.from_linear(lin, None, r)
        assert lr.num_factor_params == r * (12 + 9) == sum(p.numel() for p in (lr.A, lr.B))
        assert lr.num_bias_params == 12 and lr.bias.requires_grad
        assert lr.A.requires_grad and lr.B.requires_grad
        assert (lr.in_features, lr.out_features, lr.rank) == (9, 12, r)
        x = torch.randn(5, 7, 9)
        out = lr(x)
        assert out.shape == (5, 7, 12)
        assert torch.allclose(out, x @ (lr.A @ lr.B).T + lr.bias, atol=1e-5)
    assert torch.allclose(lr(x), lin(x), atol=1e-5)  # full rank
    lr_nb = LowRankLinear(torch.randn(4, 2), torch.randn(2, 3))
    assert lr_nb.bias is None and lr_nb.num_bias_params == 0
    assert torch.allclose(lr_nb(torch.ones(1, 3)), (lr_nb.A @ lr_nb.B).sum(1)[None])


def test_factorise_micro_vit_counts_and_exact_on_low_rank_weights():
    model = _micro_vit(1)
    r = 8
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # weights of rank r: rank-r factors then reproduce the model exactly
        for blk in model.blocks:
            for lin in (blk.attn.qkv, blk.mlp.fc2):
                m, n = lin.weight.shape
                lin.weight.copy_(torch.randn(m, r, generator=g) @ torch.randn(r, n, generator=g) / n)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    before = sum(p.numel() for p in model.parameters())
    n_factor = factorise_linears(model, None, rank=r, targets=["qkv", "fc2"])
    # qkv 32->96: 8*(96+32); fc2 128->32: 8*(32+128); two blocks
    assert n_factor == 2 * 8 * 128 + 2 * 8 * 160
    assert isinstance(model.blocks[1].attn.qkv, LowRankLinear) and isinstance(model.head, nn.Linear)
    assert isinstance(model.blocks[0].mlp.fc2, LowRankLinear) and isinstance(model.blocks[0].mlp.fc1, nn.Linear)
    after = sum(p.numel() for p in model.parameters())
    assert after - before == n_factor - (2 * 96 * 32 + 2 * 32 * 128)
    with torch.no_grad():
        out = model(x)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_factorise_low_rank_with_importance_and_paths():
    model = _micro_vit(1)
    W = model.blocks[0].attn.proj.weight.detach().clone()
    imp = {"module.blocks.0.attn.proj.weight": torch.rand(32, 32, generator=torch.Generator().manual_seed(0))}
    n = factorise_linears(model, imp, rank=4, targets=["blocks.0.attn.proj", "proj"])  # deduplicated
    assert n == 2 * 4 * (32 + 32)
    layer = model.blocks[0].attn.proj
    A, B = fisher_weighted_svd(W, imp["module.blocks.0.attn.proj.weight"], 4)
    assert torch.allclose(layer.A, A) and torch.allclose(layer.B, B)
    trainable = sum(p.numel() for n_, p in model.named_parameters() if ".attn.proj." in n_ and p.requires_grad)
    assert trainable == n + 2 * 32  # factors + the two biases
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 1)


def test_unknown_targets_raise():
    model = _micro_vit(1)
    with pytest.raises(ValueError, match=r"'attn_out'.*'qkv'.*'fc1'"):
        factorise_linears(model, None, 2, ["attn_out"])
    with pytest.raises(ValueError, match="not nn.Linear"):
        resolve_linear_targets(model, ["blocks.0.attn"])
    mlp = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="qkv"):
        resolve_linear_targets(mlp, ["qkv"])
    assert resolve_linear_targets(mlp, ["0"]) == ["0"]
