"""Tests for fairtune_ray.fisher: per-group Fisher, neutralisation, EWC penalty, stats, prior."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from fairtune_ray.fisher import (
    EWCPenalty,
    fisher_param_names,
    fisher_statistics,
    layer_disparity,
    naive_per_group_fisher,
    neutralised_importance,
    normalise,
    per_group_fisher,
    plot_disparity,
    prior_masks,
    rank_groups_by_disparity,
    save_fisher_parquet,
    select_group_samples,
)

timm = pytest.importorskip("timm")


def _mlp(num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 8),
        nn.LayerNorm(8),
        nn.GELU(),
        nn.Linear(8, 6),
        nn.BatchNorm1d(6),
        nn.Tanh(),
        nn.Linear(6, num_classes),
    )
    bn = m[5]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return m


def _micro_vit(num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=num_classes,
    )


def _data(n: int, num_classes: int, shape=(3, 2, 2), n_groups: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, max(num_classes, 2), (n,), generator=g)
    grp = torch.randint(0, n_groups, (n,), generator=g)
    return x, y, grp


def _assert_fisher_close(a, b, rtol=1e-4):
    assert a.keys() == b.keys()
    for g in a:
        assert a[g].keys() == b[g].keys()
        for n in a[g]:
            ref = b[g][n]
            atol = 1e-6 * float(ref.abs().max()) + 1e-12
            assert torch.allclose(a[g][n], ref, rtol=rtol, atol=atol), (g, n, (a[g][n] - ref).abs().max())


# --------------------------------------------------------------------------- compute


@pytest.mark.parametrize("num_classes", [1, 3])
def test_vmap_matches_naive_mlp(num_classes):
    model = _mlp(num_classes)
    x, y, grp = _data(40, num_classes, n_groups=3)
    kw = dict(samples_per_group=10, chunk_size=4, seed=3)
    fast = per_group_fisher(model, x, y, grp, **kw)
    slow = naive_per_group_fisher(model, x, y, grp, **kw)
    _assert_fisher_close(fast, slow)
    assert set(fast) == {0, 1, 2}
    # every Linear / LayerNorm / BatchNorm parameter, nothing else
    assert set(fast[0]) == {n for n, _ in model.named_parameters()}
    assert all(float(t.sum()) > 0 for t in fast[0].values())


@pytest.mark.parametrize("method", ["hooks", "vmap"])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_batched_methods_match_naive_micro_vit(num_classes, method):
    model = _micro_vit(num_classes)
    x, y, grp = _data(12, num_classes, shape=(3, 16, 16))
    kw = dict(samples_per_group=5, chunk_size=3, seed=0)
    fast = per_group_fisher(model, x, y, grp, method=method, **kw)
    slow = naive_per_group_fisher(model, x, y, grp, **kw)
    _assert_fisher_close(fast, slow)
    names = set(fast[0])
    assert "blocks.0.attn.qkv.weight" in names and "blocks.1.norm2.bias" in names and "head.weight" in names
    assert "patch_embed.proj.weight" not in names and "cls_token" not in names and "pos_embed" not in names


def test_auto_takes_hooks_only_where_they_apply(monkeypatch):
    from fairtune_ray.fisher import per_sample

    used = []
    real = per_sample.accumulate_squared_grads
    monkeypatch.setattr(per_sample, "accumulate_squared_grads", lambda *a, **k: (used.append(1), real(*a, **k))[1])
    vit, mlp = _micro_vit(1), _mlp(1)
    x, y, grp = _data(12, 1, shape=(3, 16, 16))
    per_group_fisher(vit, x, y, grp, samples_per_group=4, chunk_size=4)
    assert used and per_sample.supports(vit, fisher_param_names(vit))  # a ViT: linear and LayerNorm only
    used.clear()
    x, y, grp = _data(40, 1, n_groups=3)
    per_group_fisher(mlp, x, y, grp, samples_per_group=4, chunk_size=4)
    assert not used and not per_sample.supports(mlp, fisher_param_names(mlp))  # a BatchNorm: vmap


def test_a_linear_whose_forward_is_never_called_falls_back_to_vmap():
    """nn.MultiheadAttention uses its out_proj's weight without calling out_proj: hooks would see nothing."""

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.mha, self.head = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 1)

        def forward(self, x):
            tokens = x.reshape(x.shape[0], -1, 8)
            return self.head(self.mha(tokens, tokens, tokens, need_weights=False)[0].mean(1))

    model = Attn()
    x, y, grp = _data(12, 1, shape=(4, 8))
    names = ["mha.out_proj.weight", "head.weight"]
    kw = dict(param_names=names, samples_per_group=5, chunk_size=3, seed=0)
    with pytest.raises(RuntimeError, match="forward was not called"):
        per_group_fisher(model, x, y, grp, method="hooks", **kw)
    _assert_fisher_close(per_group_fisher(model, x, y, grp, **kw), naive_per_group_fisher(model, x, y, grp, **kw))


def test_fisher_param_names_kinds():
    model = _micro_vit(1)
    lin = fisher_param_names(model, include=("linear",))
    norm = fisher_param_names(model, include=("norm",))
    both = fisher_param_names(model)
    assert set(both) == set(lin) | set(norm) and not set(lin) & set(norm)
    assert "blocks.0.mlp.fc1.weight" in lin and "norm.weight" in norm and "blocks.0.norm1.weight" in norm
    with pytest.raises(ValueError):
        fisher_param_names(model, include=("conv",))


def test_logistic_regression_matches_closed_form():
    """For z = w.x + b: d log p(y|x)/dw = (y - sigmoid(z)) x, so F = mean((y - s)^2 x^2)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 1))
    x = torch.randn(30, 5)
    y = torch.randint(0, 2, (30,))
    grp = torch.zeros(30, dtype=torch.long)
    F = per_group_fisher(model, x, y, grp, samples_per_group=30, chunk_size=7)[0]
    with torch.no_grad():
        r = y.float() - torch.sigmoid(model(x).squeeze(1))
    assert torch.allclose(F["0.weight"], (r[:, None] ** 2 * x**2).mean(0).unsqueeze(0), rtol=1e-5)
    assert torch.allclose(F["0.bias"], (r**2).mean().reshape(1), rtol=1e-5)


def test_flat_logit_output_equals_column_output():
    class Flat(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).squeeze(-1)  # (N,)

    inner = _mlp(1)
    x, y, grp = _data(16, 1)
    col = per_group_fisher(inner, x, y, grp, samples_per_group=8)
    flat = per_group_fisher(Flat(inner), x, y, grp, samples_per_group=8)
    for g in col:
        for n in col[g]:
            assert torch.allclose(col[g][n], flat[g]["inner." + n])


def test_param_subset_constants_sampling_and_state_untouched():
    model = _mlp(1)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y, grp = _data(50, 1)
    full = per_group_fisher(model, x, y, grp, samples_per_group=6, seed=5)
    sub = per_group_fisher(model, x, y, grp, param_names=["7.weight", "2.bias"], samples_per_group=6, seed=5)
    assert set(sub[0]) == {"7.weight", "2.bias"}
    for g in sub:
        for n in sub[g]:
            assert torch.allclose(sub[g][n], full[g][n], rtol=1e-5, atol=1e-10)
    assert model.training  # mode restored
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
    # sampling: capped, without replacement, seeded, small groups kept whole
    groups = torch.tensor([0] * 20 + [1] * 3)
    s1, s2 = select_group_samples(groups, 5, seed=1), select_group_samples(groups, 5, seed=1)
    assert len(s1[0]) == 5 and len(set(s1[0].tolist())) == 5 and (groups[s1[0]] == 0).all()
    assert s1[1].tolist() == [20, 21, 22]
    assert all(torch.equal(s1[g], s2[g]) for g in s1)
    with pytest.raises(KeyError):
        per_group_fisher(model, x, y, grp, param_names=["nope.weight"])


# --------------------------------------------------------------------------- neutralise


def _fake_fisher(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.rand(4, 3, generator=g), "a.bias": torch.rand(4, generator=g)}


def test_normalise_l1():
    F = _fake_fisher(0)
    Fn = normalise(F)
    assert torch.isclose(sum(t.sum() for t in Fn.values()), torch.tensor(1.0))
    assert torch.allclose(Fn["a.bias"] * sum(t.sum() for t in F.values()), F["a.bias"])
    both = normalise({0: F, 1: _fake_fisher(1)})
    assert torch.allclose(both[0]["a.weight"], Fn["a.weight"])
    zeros = normalise({"w": torch.zeros(3)})
    assert torch.equal(zeros["w"], torch.zeros(3))


def test_neutralised_importance_invariant_to_duplicates_and_scale():
    model = _mlp(1)
    x, y, grp = _data(24, 1)
    big = 1000
    F = per_group_fisher(model, x, y, grp, samples_per_group=big)
    # duplicate every sample of group 1
    m1 = grp == 1
    x2, y2, g2 = torch.cat([x, x[m1]]), torch.cat([y, y[m1]]), torch.cat([grp, grp[m1]])
    F_dup = per_group_fisher(model, x2, y2, g2, samples_per_group=big)
    I, D = neutralised_importance(F)
    I_dup, D_dup = neutralised_importance(F_dup)
    for n in I:  # float32 per-sample gradients in different vmap chunks: rtol 1e-4
        assert torch.allclose(I[n], I_dup[n], rtol=1e-4, atol=1e-9)
        assert torch.allclose(D[n], D_dup[n], rtol=1e-4, atol=1e-9)
    # scaling one group's Fisher
    F_scaled = {0: F[0], 1: {n: 37.5 * t for n, t in F[1].items()}}
    I_s, D_s = neutralised_importance(F_scaled, gamma=1.0)
    I_1, D_1 = neutralised_importance(F, gamma=1.0)
    for n in I:
        assert torch.allclose(I_s[n], I_1[n], rtol=1e-5, atol=1e-12)
        assert torch.allclose(D_s[n], D_1[n], rtol=1e-5, atol=1e-12)
    # I sums to 1 (mean of L1-normalised groups)
    assert abs(sum(float(t.sum()) for t in I.values()) - 1.0) < 1e-5


def test_disparity_zero_for_equal_groups_and_gamma_formula():
    F0 = _fake_fisher(0)
    I, D = neutralised_importance({0: F0, 1: {n: 3 * t for n, t in F0.items()}}, gamma=2.0)
    assert all(float(d.abs().max()) < 1e-7 for d in D.values())
    Fn = normalise(F0)
    assert all(torch.allclose(I[n], Fn[n]) for n in I)  # gamma has no effect when D == 0

    F1 = _fake_fisher(1)
    gamma = 0.7
    I0, D = neutralised_importance({0: F0, 1: F1}, gamma=0.0)
    Ip, D2 = neutralised_importance({0: F0, 1: F1}, gamma=gamma)
    n0, n1 = normalise(F0), normalise(F1)
    allD = torch.cat([d.reshape(-1) for d in D.values()])
    for n in I0:
        assert torch.allclose(I0[n], (n0[n] + n1[n]) / 2)
        assert torch.allclose(D[n], (n0[n] - n1[n]).abs())
        assert torch.allclose(Ip[n], I0[n] * torch.exp(-gamma * D[n] / allD.mean()), rtol=1e-5)
        assert (Ip[n] <= I0[n] + 1e-12).all()


# --------------------------------------------------------------------------- penalty


class _DDPLike(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def test_ewc_penalty_zero_positive_and_gradient():
    model = _mlp(1)
    imp = {n: torch.rand_like(p) for n, p in model.named_parameters() if n.endswith("weight")}
    lam = 3.0
    pen = EWCPenalty(model, imp, lam)
    assert float(pen(model).detach()) == 0.0
    star = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    val = pen(model)
    assert float(val.detach()) > 0
    expected = 0.5 * lam * sum(((imp[n] * (p - star[n]) ** 2).sum() for n, p in model.named_parameters() if n in imp))
    assert torch.allclose(val, expected)
    model.zero_grad()
    val.backward()
    for n, p in model.named_parameters():
        if n in imp:
            assert torch.allclose(p.grad, lam * imp[n] * (p.detach() - star[n]), rtol=1e-5, atol=1e-7)
        else:
            assert p.grad is None or float(p.grad.abs().max()) == 0.0


def test_ewc_penalty_wrapped_model_and_strict():
    model = _mlp(1)
    imp = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    pen = EWCPenalty(model, imp, lam=1.0)
    wrapped = _DDPLike(model)
    with torch.no_grad():
        model[1].weight.add_(1.0)
    ref = pen(model)
    assert torch.allclose(pen(wrapped), ref) and float(ref.detach()) > 0
    # built on the wrapped model with prefixed keys, evaluated on the bare one
    pen2 = EWCPenalty(wrapped, {"module." + n: t for n, t in imp.items()}, lam=1.0)
    assert float(pen2(model).detach()) == 0.0
    with pytest.raises(KeyError):
        EWCPenalty(model, {"missing.weight": torch.ones(2)}, lam=1.0)
    with pytest.warns(UserWarning):
        pen3 = EWCPenalty(model, {"missing.weight": torch.ones(2), "1.bias": torch.ones(8)}, lam=1.0, strict=False)
    assert pen3.names == ["1.bias"]


# --------------------------------------------------------------------------- stats


def test_fisher_statistics_parquet_and_plot(tmp_path):
    model = _mlp(1)
    x, y, grp = _data(30, 1, n_groups=3)
    F = per_group_fisher(model, x, y, grp, samples_per_group=8)
    names = {0: "light", 1: "medium", 2: "dark"}
    df = fisher_statistics(F, names, gamma=0.5)
    n_params = len(F[0])
    assert list(df.columns) == [
        "group", "param", "layer", "numel", "mean_fisher", "mean_normalised_fisher",
        "disparity_mean", "disparity_max", "importance_mean",
    ]  # fmt: skip
    assert len(df) == 3 * n_params and set(df["group"]) == {"light", "medium", "dark"}
    row = df[(df.group == "dark") & (df.param == "1.weight")].iloc[0]
    assert row.layer == "1" and row.numel == 96
    assert row.mean_fisher == pytest.approx(float(F[2]["1.weight"].mean()), rel=1e-6)
    I, D = neutralised_importance(F, gamma=0.5)
    assert row.disparity_max == pytest.approx(float(D["1.weight"].max()), rel=1e-6)
    assert row.importance_mean == pytest.approx(float(I["1.weight"].mean()), rel=1e-6)
    # disparity columns identical across groups
    assert (df.groupby("param")["disparity_mean"].nunique() == 1).all()
    # per-group normalised means sum (weighted by numel) to 1
    for _, sub in df.groupby("group"):
        assert (sub.mean_normalised_fisher * sub.numel).sum() == pytest.approx(1.0, rel=1e-5)
    ld = layer_disparity(D)
    assert ld["1.weight"] == pytest.approx(float(D["1.weight"].mean()))

    pq_path = save_fisher_parquet(df, tmp_path / "sub" / "fisher.parquet")
    back = pd.read_parquet(pq_path)
    pd.testing.assert_frame_equal(back, df)

    png = plot_disparity(df, tmp_path / "disparity.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


# --------------------------------------------------------------------------- prior


def test_prior_freezes_highest_disparity_groups_first():
    D = {
        "blocks.0.attn.qkv.weight": torch.full((4, 4), 0.1),
        "blocks.0.norm1.weight": torch.full((4,), 0.9),
        "blocks.1.attn.qkv.weight": torch.full((4, 4), 0.5),
        "blocks.1.mlp.fc1.weight": torch.full((4, 4), 0.3),
        "blocks.1.mlp.fc1.bias": torch.full((4,), 0.7),
    }
    space = SimpleNamespace(
        param_groups=[
            ["blocks.0.norm1.weight", "blocks.0.norm1.bias"],  # 0.9 (bias has no Fisher)
            ["blocks.0.attn.qkv.weight"],  # 0.1
            ["blocks.0.mlp.fc1.weight"],  # not in D -> not a candidate
            ["blocks.1.attn.qkv.weight"],  # 0.5
            ["module.blocks.1.mlp.fc1.weight", "blocks.1.mlp.fc1.bias"],  # (16*.3 + 4*.7)/20 = 0.38
        ],
        group_names=["b0.norm", "b0.attn", "b0.mlp", "b1.attn", "b1.mlp"],
    )
    ranked = rank_groups_by_disparity(space, D)
    assert [r[0] for r in ranked] == [0, 3, 4, 1]
    assert [r[1] for r in ranked] == ["b0.norm", "b1.attn", "b1.mlp", "b0.attn"]
    assert ranked[2][2] == pytest.approx(0.38, rel=1e-6)
    masks = prior_masks(space, D, ks=(1, 2, 3))
    assert masks == ["01111", "01101", "01100"]
    # k beyond the candidates is clipped and duplicates are dropped
    assert prior_masks(space, D, ks=(4, 9, 1)) == ["00100", "01111"]


# --------------------------------------------------------------------------- cache folder


def test_cache_folder_is_written_whole_and_a_concurrent_one_is_kept(tmp_path):
    from fairtune_ray.fisher.cache import _save, load_fisher, load_importance

    model = _mlp(1)
    x, y, grp = _data(30, 1, n_groups=2)
    F = per_group_fisher(model, x, y, grp, samples_per_group=8)
    I1, D = neutralised_importance(F, gamma=1.0)
    stats = fisher_statistics(F, {0: "a", 1: "b"})
    result = {"fisher": F, "importance": {1.0: I1}, "D": D}
    directory = tmp_path / "fisher" / "key1"
    _save(directory, result, stats, {"key": "key1", "attribute": "sex"})
    assert sorted(p.name for p in (tmp_path / "fisher").iterdir()) == ["key1"]
    loaded = load_fisher(directory)
    assert loaded.key == "key1" and loaded.cached and set(loaded.fisher_by_group) == {0, 1}
    for name, t in I1.items():
        assert torch.equal(load_importance(str(loaded.importance_path), 1.0)[name], t)

    # another process finished the same folder first: theirs stays, ours leaves no trace
    _save(directory, result, stats, {"key": "other", "attribute": "sex"})
    assert load_fisher(directory).key == "key1"
    assert sorted(p.name for p in (tmp_path / "fisher").iterdir()) == ["key1"]
