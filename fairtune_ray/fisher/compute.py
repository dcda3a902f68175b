"""Per-group diagonal empirical Fisher information.

``per_group_fisher`` computes, for every demographic group g and every selected parameter i,

    F^g_i = mean over sampled (x, y) in g of ( d log p(y | x; theta) / d theta_i )^2

at the model's current weights (theta*: the pre-trained backbone with the head fitted by
``fisher.head``), with TRUE labels. Per-sample gradients of linear and LayerNorm layers (a ViT's)
come from one batched backward per chunk and their closed forms (fisher/per_sample.py); other
layers use ``torch.func``: ``vmap(grad(log_prob))`` over chunks of samples. Neither loops over samples. ``naive_per_group_fisher`` is the same quantity with a plain loop over single
samples and ``torch.autograd``; it is the reference for the tests and the benchmark.

Why diagonal empirical Fisher: it needs only first-order per-sample gradients, its cost is one
backward per sample, and it is exactly what the EWC penalty and the Fisher-weighted SVD consume.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from fairtune_ray.fisher import per_sample
from fairtune_ray.models.lowrank import LowRankLinear

__all__ = [
    "fisher_param_names",
    "per_group_fisher",
    "naive_per_group_fisher",
    "select_group_samples",
    "average_fisher",
    "NORM_TYPES",
]

#: Module types counted as "norm" layers.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

FisherByGroup = dict[int, dict[str, Tensor]]


def _is_linear(module: nn.Module) -> bool:
    """Plain linear layers and factorised ones (``LowRankLinear``) alike."""
    return isinstance(module, (nn.Linear, LowRankLinear))


def fisher_param_names(model: nn.Module, include: Sequence[str] = ("linear", "norm")) -> list[str]:
    """Names of the parameters of every linear and/or norm layer, in ``named_parameters`` order.

    Why only these: docs/design.md#fisher-neutralisation restricts the Fisher to linear and norm layers (the layers that
    the mask search, the EWC penalty and the low-rank factorisation act on).
    """
    unknown = set(include) - {"linear", "norm"}
    if unknown:
        raise ValueError(f"unknown layer kinds {sorted(unknown)}; valid: 'linear', 'norm'")
    wanted: set[str] = set()
    for mod_name, module in model.named_modules():
        take = ("linear" in include and _is_linear(module)) or (
            "norm" in include and isinstance(module, NORM_TYPES)
        )
        if not take:
            continue
        for p_name, _ in module.named_parameters(recurse=False):
            wanted.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return [n for n, _ in model.named_parameters() if n in wanted]


def select_group_samples(groups: Tensor, samples_per_group: int, seed: int = 0) -> dict[int, Tensor]:
    """Indices of up to ``samples_per_group`` samples per group, drawn without replacement.

    Why seeded and shared: the vmap and the naive implementations must see the same samples,
    and a search must be reproducible.
    """
    if samples_per_group < 1:
        raise ValueError("samples_per_group must be >= 1")
    groups = torch.as_tensor(groups).detach().cpu().reshape(-1)
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[int, Tensor] = {}
    for g in torch.unique(groups).tolist():
        idx = torch.nonzero(groups == g, as_tuple=False).reshape(-1)
        if idx.numel() > samples_per_group:
            idx = idx[torch.randperm(idx.numel(), generator=gen)[:samples_per_group]]
            idx, _ = torch.sort(idx)
        out[int(g)] = idx
    return out


def _log_prob(out: Tensor, y: Tensor) -> Tensor:
    """log p(y|x) for ONE sample, given the model output of a batch of one: ``_log_prob_sum`` of that batch."""
    return _log_prob_sum(out, y.reshape(1))


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _split_state(
    model: nn.Module, param_names: Sequence[str] | None, device: torch.device
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(differentiated params, constants = other params + buffers), detached, on ``device``."""
    names = fisher_param_names(model) if param_names is None else list(param_names)
    all_params = dict(model.named_parameters())
    missing = [n for n in names if n not in all_params]
    if missing:
        raise KeyError(f"parameters not in model: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    chosen = set(names)
    params = {n: all_params[n].detach().to(device) for n in names}
    consts = {n: p.detach().to(device) for n, p in all_params.items() if n not in chosen}
    consts.update({n: b.detach().to(device) for n, b in model.named_buffers()})
    return params, consts


def _default_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _check_inputs(images: Tensor, labels: Tensor, groups: Tensor) -> None:
    n = images.shape[0]
    if labels.shape[0] != n or groups.shape[0] != n:
        raise ValueError(
            f"images, labels and groups must have the same length: {n}, {labels.shape[0]}, {groups.shape[0]}"
        )


def per_group_fisher(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    groups: Tensor,
    param_names: Sequence[str] | None = None,
    samples_per_group: int = 64,
    chunk_size: int = 32,
    seed: int = 0,
    device: torch.device | str | None = None,
    method: str = "auto",
) -> FisherByGroup:
    """Diagonal empirical Fisher per group, ``{group: {param_name: tensor}}`` (float32, on CPU).

    ``method``: 'hooks' forms the per-sample gradients of linear and LayerNorm layers from one batched
    backward per chunk (fisher/per_sample.py, about a training step's cost); 'vmap' differentiates
    each sample with ``vmap(grad(...))``, for any layer; 'auto' takes hooks wherever they apply.
    Per-sample gradients come in chunks of ``chunk_size`` samples. The
    model runs in eval mode (restored afterwards); parameters outside ``param_names`` (default:
    ``fisher_param_names(model)``) and buffers are passed to ``functional_call`` as constants, so
    they are not differentiated. The model's own parameters are never modified.
    """
    _check_inputs(images, labels, groups)
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    dev = _default_device(model, device)
    names = fisher_param_names(model) if param_names is None else list(param_names)
    explicit = method != "auto"
    if method == "auto":
        method = "hooks" if per_sample.supports(model, names) else "vmap"
    if method == "hooks":
        try:
            return _hooked_per_group_fisher(model, images, labels, groups, names, samples_per_group, chunk_size,
                                            seed, dev)
        except per_sample.LayerNotCalled:
            if explicit:
                raise
    elif method != "vmap":
        raise ValueError(f"method must be 'auto', 'hooks' or 'vmap', got {method!r}")
    return _vmap_per_group_fisher(model, images, labels, groups, names, samples_per_group, chunk_size, seed, dev)


def _vmap_per_group_fisher(model: nn.Module, images: Tensor, labels: Tensor, groups: Tensor, names: list[str],
                           samples_per_group: int, chunk_size: int, seed: int, dev: torch.device) -> FisherByGroup:
    """``per_group_fisher`` with ``method='vmap'``: ``vmap(grad(log p))`` over each chunk, any layer."""
    params, consts = _split_state(model, names, dev)

    def log_prob(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(model, (p, consts), (x.unsqueeze(0),))
        return _log_prob(out, y)

    per_sample_grad: Callable[..., dict[str, Tensor]] = vmap(grad(log_prob), in_dims=(None, 0, 0))

    result: FisherByGroup = {}
    # The math SDPA backend is composite, so vmap batches it; the fused CPU/flash kernels have
    # no batching rule and would fall back to a slow per-sample loop inside vmap.
    with _eval_mode(model), sdpa_kernel([SDPBackend.MATH]):
        for g, idx in select_group_samples(groups, samples_per_group, seed).items():
            acc = {n: torch.zeros(p.shape, dtype=torch.float64, device=dev) for n, p in params.items()}
            for start in range(0, idx.numel(), chunk_size):
                sel = idx[start : start + chunk_size]
                x = images[sel].to(dev, non_blocking=True)
                y = labels[sel].to(dev, non_blocking=True)
                grads = per_sample_grad(params, x, y)
                for n, gr in grads.items():
                    acc[n] += gr.detach().double().pow(2).sum(0)
            count = max(int(idx.numel()), 1)
            result[g] = {n: (a / count).float().cpu() for n, a in acc.items()}
    return result


def _log_prob_sum(out: Tensor, y: Tensor) -> Tensor:
    """Sum over a batch of log p(y_i|x_i). One logit: log sigmoid(z) for y=1, log sigmoid(-z) for y=0;
    several logits: log_softmax."""
    out = out.reshape(out.shape[0], -1)
    if out.shape[1] == 1:
        return nn.functional.logsigmoid((2.0 * y.to(out.dtype) - 1.0) * out[:, 0]).sum()
    return torch.log_softmax(out, dim=-1).gather(1, y.long().reshape(-1, 1)).sum()


def _hooked_per_group_fisher(model: nn.Module, images: Tensor, labels: Tensor, groups: Tensor, names: list[str],
                             samples_per_group: int, chunk_size: int, seed: int, dev: torch.device) -> FisherByGroup:
    """``per_group_fisher`` with ``method='hooks'``: the same sums, one batched backward per chunk."""
    shapes = dict(model.named_parameters())
    result: FisherByGroup = {}
    with _eval_mode(model):
        for g, idx in select_group_samples(groups, samples_per_group, seed).items():
            acc = {n: torch.zeros(shapes[n].shape, dtype=torch.float32, device=dev) for n in names}
            for start in range(0, idx.numel(), chunk_size):
                sel = idx[start : start + chunk_size]
                y = labels[sel].to(dev, non_blocking=True)
                per_sample.accumulate_squared_grads(model, names, lambda out, y=y: _log_prob_sum(out, y),
                                                    images[sel].to(dev, non_blocking=True), acc)
            count = max(int(idx.numel()), 1)
            result[g] = {n: (a / count).float().cpu() for n, a in acc.items()}
    return result


def naive_per_group_fisher(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    groups: Tensor,
    param_names: Sequence[str] | None = None,
    samples_per_group: int = 64,
    chunk_size: int = 32,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> FisherByGroup:
    """Reference implementation: a Python loop over single samples with ``torch.autograd.grad``.

    Same signature, sampling and output as ``per_group_fisher`` (``chunk_size`` is ignored).
    Why keep it: it is obviously correct, so it checks the vmap path and is the benchmark's
    baseline.
    """
    del chunk_size
    _check_inputs(images, labels, groups)
    dev = _default_device(model, device)
    params, consts = _split_state(model, param_names, dev)
    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    names = list(leaves)

    result: FisherByGroup = {}
    with _eval_mode(model):
        for g, idx in select_group_samples(groups, samples_per_group, seed).items():
            acc = {n: torch.zeros(p.shape, dtype=torch.float64, device=dev) for n, p in params.items()}
            for i in idx.tolist():
                x = images[i : i + 1].to(dev)
                y = labels[i].to(dev)
                out = functional_call(model, (leaves, consts), (x,))
                lp = _log_prob(out, y)
                grads = torch.autograd.grad(lp, [leaves[n] for n in names], allow_unused=True)
                for n, gr in zip(names, grads):
                    if gr is not None:
                        acc[n] += gr.detach().double().pow(2)
            count = max(int(idx.numel()), 1)
            result[g] = {n: (a / count).float().cpu() for n, a in acc.items()}
    return result



def average_fisher(fishers: Sequence[FisherByGroup]) -> FisherByGroup:
    """Element-wise mean of per-group Fisher estimates taken at several heads (``fisher.head_seeds``).

    Why before neutralisation: it estimates the Fisher in expectation over the head's fit, and
    the neutralisation then sees one Fisher per group, as with a single head.
    """
    if not fishers:
        raise ValueError("average_fisher: no Fisher estimates")
    if len(fishers) == 1:
        return fishers[0]
    return {g: {n: torch.stack([f[g][n].double() for f in fishers]).mean(0).float() for n in fishers[0][g]}
            for g in fishers[0]}
