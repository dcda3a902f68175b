"""Fit the new one-logit head before the Fisher pass: a linear probe on the frozen backbone.

Why: a pre-trained backbone gets a freshly initialised head (the source task's head has another
shape), and every backbone gradient of log p(y|x) passes through the head's weight vector, so a
Fisher taken through a random head measures a random readout direction: on the micro model,
element-wise importances from two head seeds correlate at Spearman ~0.6. Fitting the head first
makes theta* = (pre-trained backbone, fitted head) a point that depends on the data, not a seed,
and the Fisher-method trials start from that same head (``fisher.cache.load_fitted_head``).

How, and why so: L2-regularised logistic regression on the pooled features (the classifier's
input), computed once with the backbone frozen, fitted full-batch by L-BFGS in float64.
* The backbone is frozen, so features need one forward pass and the fit costs milliseconds.
* The L2 term (on standardised features, so its strength does not depend on the feature scale)
  makes the objective strictly convex: the optimum is unique, so the head does not depend on its
  initialisation and L-BFGS reaches it in a few dozen iterations, deterministically; without it a
  separable training set would send the weights to infinity and the sigmoid would saturate.
* The loss is the trial's own: BCE with ``pos_weight`` when ``data.class_weights``, and samples
  weighted so every (group, label) cell counts equally when ``data.group_balanced`` (the trial's
  sampler), so the head starts at the optimum of the objective fine-tuning then continues.
* Seeds: head 0 is fitted on all probe rows (the head trials start from, seed-free); with
  ``fisher.head_seeds`` > 1 each further head is fitted on a seeded bootstrap resample, and the
  Fisher is averaged over the heads to smooth its dependence on which rows the probe saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairtune_ray.common.errors import InputError
from fairtune_ray.data.loading import BatchTransform, group_balanced_weights

__all__ = ["FittedHead", "HeadFitError", "classifier", "pooled_features", "probe_weights", "fit_heads",
           "fit_logistic", "set_head", "bootstrap_rows", "pos_weight_of"]


class HeadFitError(InputError):
    """The backbone's head cannot be fitted by a linear probe (not a one-logit ``nn.Linear``)."""


@dataclass
class FittedHead:
    """One fitted head: the classifier's state (``weight`` (1, d), ``bias`` (1,)) and fit diagnostics."""

    state: dict[str, Tensor]
    loss: float
    accuracy: float

    def summary(self) -> dict:
        return {"loss": self.loss, "accuracy": self.accuracy, "weight_norm": float(self.state["weight"].norm())}


def classifier(model: nn.Module) -> nn.Linear:
    """The model's one-logit linear head (``get_classifier()``); a clear error otherwise."""
    clf = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(clf, nn.Linear) or clf.out_features != 1 or clf.bias is None:
        raise HeadFitError(f"fisher.fit_head: the head of {type(model).__name__} is not a one-logit nn.Linear "
                           f"with a bias ({type(clf).__name__}); set fisher.fit_head: false to keep a random head")
    return clf


@torch.no_grad()
def pooled_features(model: nn.Module, images: Tensor, transform: BatchTransform, device: torch.device,
                    batch_size: int = 128) -> Tensor:
    """The classifier's input for uint8 ``images`` (n, C, H, W), in eval mode, as float64 on CPU.

    Chunked so that only ``batch_size`` float images are in memory at a time.
    """
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = transform(images[start:start + batch_size].to(device), train=False)
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).double().cpu())
        return torch.cat(out) if out else torch.zeros(0, 0, dtype=torch.float64)
    finally:
        model.train(was_training)


def probe_weights(labels: Tensor, groups: Tensor, group_balanced: bool) -> Tensor:
    """Per-sample loss weights, mean 1: uniform, or equal total weight per (group, label) cell like the
    trial's group-balanced sampler."""
    if not group_balanced:
        return torch.ones(labels.shape[0], dtype=torch.float64)
    w = group_balanced_weights(labels.long(), groups.long()).double()
    return w / w.mean()


def pos_weight_of(labels: Tensor, class_weights: bool) -> Optional[float]:
    """The trial's ``pos_weight`` (negatives / positives, as ``training.loop.make_loss``), or None."""
    if not class_weights:
        return None
    pos = float(labels.double().mean().clamp(1e-3, 1 - 1e-3))
    return (1 - pos) / pos


def _loss(z: Tensor, y: Tensor, w: Tensor, pos_weight: Optional[float]) -> Tensor:
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=z.dtype)
    return F.binary_cross_entropy_with_logits(z, y, weight=w, pos_weight=pw, reduction="sum") / w.sum()


def fit_logistic(features: Tensor, labels: Tensor, weights: Tensor, init: dict[str, Tensor], l2: float,
                 steps: int, pos_weight: Optional[float] = None) -> FittedHead:
    """L2-regularised weighted logistic regression by full-batch L-BFGS, from ``init`` (a head state).

    Fitted on standardised features (the L2 acts there), then mapped back to a head on the raw
    features: ``W = w / sd``, ``b = b_s - (w / sd) . mu``.
    """
    x, y, wt = features.double(), labels.double(), weights.double()
    mu, sd = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)
    z = (x - mu) / sd
    W0, b0 = init["weight"].double().reshape(-1), init["bias"].double().reshape(())
    w = (W0 * sd).clone().requires_grad_(True)
    b = (b0 + (W0 * mu).sum()).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _loss(z @ w + b, y, wt, pos_weight) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    W = (w / sd).detach()
    bias = (b - (w * mu / sd).sum()).detach()
    logits = x @ W + bias
    return FittedHead(state={"weight": W.float().reshape(1, -1), "bias": bias.float().reshape(1)},
                      loss=float(_loss(logits, y, wt, pos_weight)),
                      accuracy=float(((logits > 0).double() == y).double().mean()))


def bootstrap_rows(n: int, seed: int, k: int) -> Tensor:
    """Head k's probe rows: all of them for k = 0, a bootstrap resample seeded by (seed, k) otherwise."""
    if k == 0:
        return torch.arange(n)
    return torch.from_numpy(np.random.default_rng([int(seed), int(k)]).integers(0, n, size=n))


def fit_heads(model: nn.Module, features: Tensor, labels: Tensor, groups: Tensor, *, l2: float, steps: int,
              n_heads: int, seed: int, group_balanced: bool, class_weights: bool) -> list[FittedHead]:
    """``n_heads`` fitted heads (head 0 on every row, the others on bootstrap resamples), each from
    the model's current (fresh) head; the model is not modified."""
    clf = classifier(model)
    init = {"weight": clf.weight.detach().cpu(), "bias": clf.bias.detach().cpu()}
    pos_weight = pos_weight_of(labels, class_weights)
    heads = []
    for k in range(n_heads):
        rows = bootstrap_rows(labels.shape[0], seed, k)
        weights = probe_weights(labels[rows], groups[rows], group_balanced)
        heads.append(fit_logistic(features[rows], labels[rows], weights, init, l2, steps, pos_weight))
    return heads


@torch.no_grad()
def set_head(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy a fitted head into the model's classifier in place (``requires_grad`` flags are kept)."""
    clf = classifier(model)
    for name in ("weight", "bias"):
        target, value = getattr(clf, name), state[name]
        if tuple(value.shape) != tuple(target.shape):
            raise HeadFitError(f"fitted head: {name} has shape {tuple(value.shape)}, the model's head "
                               f"{tuple(target.shape)} (was the Fisher computed for another backbone?)")
        target.copy_(value.to(device=target.device, dtype=target.dtype))
