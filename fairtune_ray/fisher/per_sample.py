"""Per-sample squared gradients of linear and LayerNorm layers from one batched backward pass.

The diagonal Fisher needs, per sample, the gradient of every linear and norm parameter. For these
layers it has a closed form in what the layer saw and what flowed back into it (as in Opacus and
BackPACK): for a linear layer with input ``a`` (tokens x in) and output gradient ``g`` (tokens x out),
the sample's weight gradient is ``g^T a`` and its bias gradient ``sum_t g_t``; for a LayerNorm with
normalised input ``x_hat``, ``sum_t g_t * x_hat_t`` and ``sum_t g_t``. So one forward and one backward
of the whole chunk, taken with respect to the images only (no weight gradient is formed by autograd),
plus one batched matmul per linear layer give every sample's gradient: about the cost of a training
step, where ``vmap(grad)`` pays several (benchmarks/bench_fisher.py). Models with other layers holding
the chosen parameters (a BatchNorm, a factorised linear) use ``vmap`` (fisher/compute.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch
from torch import Tensor, nn


class LayerNotCalled(RuntimeError):
    """A layer holding a chosen parameter was not called through its ``forward`` (e.g. the output
    projection of ``nn.MultiheadAttention``), so its hooks saw nothing: use ``vmap`` instead."""


def supports(model: nn.Module, param_names: Sequence[str]) -> bool:
    """Every chosen parameter is the weight or bias of an ``nn.Linear`` or ``nn.LayerNorm``."""
    owners = _owners(model, param_names)
    return owners is not None


def _owners(model: nn.Module, param_names: Sequence[str]) -> dict[nn.Module, dict[str, str]] | None:
    """{module: {"weight"|"bias": full parameter name}} for the chosen parameters, or None when one of
    them sits elsewhere than on a plain linear or LayerNorm layer."""
    wanted, owners = set(param_names), {}
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if full not in wanted:
                continue
            if not isinstance(module, (nn.Linear, nn.LayerNorm)) or p_name not in ("weight", "bias"):
                return None
            owners.setdefault(module, {})[p_name] = full
            wanted.discard(full)
    return owners if not wanted else None


def _tokens(t: Tensor) -> Tensor:
    """(batch, ..., features) -> (batch, tokens, features)."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _linear_sq(module: nn.Linear, a: Tensor, g: Tensor, names: dict[str, str], acc: dict[str, Tensor]) -> None:
    a, g = _tokens(a), _tokens(g)
    if "weight" in names:
        acc[names["weight"]] += torch.bmm(g.transpose(1, 2), a).pow_(2).sum(0)
    if "bias" in names:
        acc[names["bias"]] += g.sum(1).pow_(2).sum(0)


def _layernorm_sq(module: nn.LayerNorm, x: Tensor, g: Tensor, names: dict[str, str], acc: dict[str, Tensor]) -> None:
    shape = (x.shape[0], -1, *module.normalized_shape)
    if "weight" in names:
        x_hat = nn.functional.layer_norm(x, module.normalized_shape, eps=module.eps)  # no affine: the normalised input
        acc[names["weight"]] += (g * x_hat).reshape(shape).sum(1).pow_(2).sum(0)
    if "bias" in names:
        acc[names["bias"]] += g.reshape(shape).sum(1).pow_(2).sum(0)


def accumulate_squared_grads(model: nn.Module, param_names: Sequence[str], log_prob_sum: Callable[[Tensor], Tensor],
                             x: Tensor, acc: dict[str, Tensor]) -> None:
    """Add the squared per-sample gradients of ``log_prob_sum(model(x))`` (a sum over the samples of
    their log-likelihoods) for ``param_names`` to ``acc`` (one tensor per name, float32 is enough for a
    sum of a few thousand positive terms). The model
    must treat samples independently (eval mode: no batch statistics)."""
    owners = _owners(model, param_names)
    if owners is None:
        raise ValueError("per-sample squared gradients need every parameter on an nn.Linear or nn.LayerNorm")
    seen: dict[nn.Module, Tensor] = {}
    handles = []
    for module in owners:
        handles.append(module.register_forward_hook(lambda m, inputs, out: seen.__setitem__(m, inputs[0].detach())))
    done: set[nn.Module] = set()

    def backward_hook(module: nn.Module, grad_in, grad_out) -> None:  # returns None: grad_input unchanged
        sq = _linear_sq if isinstance(module, nn.Linear) else _layernorm_sq
        sq(module, seen.pop(module), grad_out[0].detach(), owners[module], acc)
        done.add(module)

    handles += [module.register_full_backward_hook(backward_hook) for module in owners]
    try:
        x = x.detach().requires_grad_(True)  # the only leaf: autograd forms no weight gradient
        torch.autograd.grad(log_prob_sum(model(x)), [x])
    finally:
        for h in handles:
            h.remove()
    missed = [name for name, m in model.named_modules() if m in owners and m not in done]
    if missed:
        raise LayerNotCalled(f"no per-sample gradient for {missed[:3]}: these layers' forward was not called")
