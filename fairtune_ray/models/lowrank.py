"""Fisher-weighted low-rank factorisation (FWSVD) of linear layers.

For a linear layer with weight W (m x n, out x in) and neutralised importance I' of the same
shape (docs/design.md#fisher-neutralisation (b), our formulation of the published idea):

    s_j     = sqrt( sum_k I'_jk )                 row (output unit) importance
    U S V^T = svd( diag(s) W )
    A       = diag(s)^-1 U_r S_r      (m x r)
    B       = V_r^T                   (r x n)

and W is replaced by the product A B, so the layer trains r(m+n) factor parameters instead of
mn. Why weight the rows: plain truncated SVD minimises ||W - AB||_F and treats every output unit
alike; weighting by s minimises ||diag(s)(W - AB)||_F instead, so the approximation error goes to
the output units that matter least for the (group-neutralised) likelihood.

Only where it compresses: a target with r(m+n) >= mn (e.g. a one-logit head, 1 x n) would train
at least as many factor parameters as the dense weight, so ``factorise_linears`` refuses it
(``check_compresses``; the search checks its largest rank before Ray starts). The factors follow
the mask: they are trainable iff the replaced weight was (``LowRankLinear.from_linear``).

Note: since diag(s) W V_r = U_r S_r, A equals W V_r exactly whenever every s_j > 0; we compute
it that way, which avoids dividing by small s_j. Zero rows of s are first raised to a small
epsilon (relative to max(s)) so that the weighting stays invertible.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from fairtune_ray.models.naming import canonical_name

__all__ = [
    "fisher_weighted_svd",
    "LowRankLinear",
    "factorise_linears",
    "resolve_linear_targets",
    "check_compresses",
    "compresses",
    "max_compressing_rank",
    "BLOCK_TARGETS",
]

#: Short target names -> module-path pattern inside every ViT block.
BLOCK_TARGETS: dict[str, str] = {
    "qkv": r"blocks\.\d+\.attn\.qkv",
    "proj": r"blocks\.\d+\.attn\.proj",
    "fc1": r"blocks\.\d+\.mlp\.fc1",
    "fc2": r"blocks\.\d+\.mlp\.fc2",
}
_EPS_REL = 1e-6


def _row_scale(importance: Tensor | None, m: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """s_j = sqrt(sum_k I'_jk), guarded; None / all-zero importance -> ones (plain SVD)."""
    if importance is None:
        return torch.ones(m, dtype=dtype, device=device)
    s = importance.detach().to(device=device, dtype=dtype).clamp_min(0).sum(dim=1).sqrt()
    smax = s.max()
    if not torch.isfinite(smax) or smax <= 0:
        return torch.ones(m, dtype=dtype, device=device)
    return s.clamp_min(smax * _EPS_REL)


def fisher_weighted_svd(W: Tensor, importance: Tensor | None, rank: int) -> tuple[Tensor, Tensor]:
    """Rank-r FWSVD of W (m x n): returns (A (m x r), B (r x n)) with A B ~ W.

    ``importance`` is the element-wise importance I' of W (m x n) or None (uniform, which gives
    exactly the plain truncated SVD). ``rank`` is clipped to [1, min(m, n)]. Computed in float64,
    returned in W's dtype.
    """
    if W.dim() != 2:
        raise ValueError(f"W must be 2-D, got shape {tuple(W.shape)}")
    m, n = W.shape
    if importance is not None and tuple(importance.shape) != (m, n):
        raise ValueError(f"importance shape {tuple(importance.shape)} != W shape {(m, n)}")
    r = max(1, min(int(rank), m, n))
    Wd = W.detach().to(torch.float64)
    s = _row_scale(importance, m, torch.float64, Wd.device)
    _, _, Vh = torch.linalg.svd(s[:, None] * Wd, full_matrices=False)
    B = Vh[:r]  # V_r^T, (r x n)
    A = Wd @ B.T  # == diag(s)^-1 U_r S_r, (m x r)
    return A.to(W.dtype), B.to(W.dtype)


class LowRankLinear(nn.Module):
    """y = x (A B)^T + bias, with trainable factors A (m x r) and B (r x n).

    Trainable count: ``num_factor_params`` = r(m+n) for the factors; the bias (m values, kept
    with the original layer's ``requires_grad``) is reported separately as ``num_bias_params``.
    """

    def __init__(self, A: Tensor, B: Tensor, bias: Tensor | None = None, bias_trainable: bool = True,
                 factors_trainable: bool = True) -> None:
        super().__init__()
        if A.dim() != 2 or B.dim() != 2 or A.shape[1] != B.shape[0]:
            raise ValueError(f"incompatible factors A {tuple(A.shape)} and B {tuple(B.shape)}")
        self.A = nn.Parameter(A.detach().clone(), requires_grad=factors_trainable)
        self.B = nn.Parameter(B.detach().clone(), requires_grad=factors_trainable)
        if bias is not None:
            self.bias: nn.Parameter | None = nn.Parameter(bias.detach().clone(), requires_grad=bias_trainable)
        else:
            self.register_parameter("bias", None)

    @property
    def out_features(self) -> int:
        return int(self.A.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.B.shape[1])

    @property
    def rank(self) -> int:
        return int(self.A.shape[1])

    @property
    def num_factor_params(self) -> int:
        """r(m+n): the trainable factor parameters."""
        return self.rank * (self.out_features + self.in_features)

    @property
    def num_bias_params(self) -> int:
        return 0 if self.bias is None else int(self.bias.numel())

    def merged_weight(self) -> Tensor:
        """A B, the (m x n) weight this layer represents."""
        return self.A @ self.B

    def forward(self, x: Tensor) -> Tensor:
        # Two thin matmuls (x B^T) A^T: cheaper than forming A B when r < mn/(m+n).
        return nn.functional.linear(nn.functional.linear(x, self.B), self.A, self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, importance: Tensor | None, rank: int) -> "LowRankLinear":
        """FWSVD initialisation from an existing ``nn.Linear``.

        The factors inherit the weight's ``requires_grad`` and the bias keeps its own, so a layer
        the mask froze stays frozen once factorised (the mask decides what trains, not the rank).
        """
        A, B = fisher_weighted_svd(linear.weight, importance, rank)
        bias = linear.bias
        return cls(A, B, bias, bias_trainable=bool(bias.requires_grad) if bias is not None else True,
                   factors_trainable=bool(linear.weight.requires_grad))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, bias={self.bias is not None}"


def _valid_targets_msg() -> str:
    return f"valid targets: 'head', {', '.join(repr(k) for k in BLOCK_TARGETS)}, or the full path of an nn.Linear module"


def resolve_linear_targets(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """Module paths of the ``nn.Linear`` layers named by ``targets`` (deduplicated, in order).

    A name that matches nothing is a ValueError, never an empty set: on a CNN (no ``blocks.N.attn``)
    the ViT names ``qkv``/``proj``/``fc1``/``fc2`` fail, so asking for them is a visible mistake
    rather than a Fisher method that silently factorises nothing.
    """
    modules = dict(model.named_modules())
    paths: list[str] = []
    for t in targets:
        if t == "head":
            get = getattr(model, "get_classifier", None)
            if get is None and hasattr(model, "module"):
                get = getattr(model.module, "get_classifier", None)
            head = get() if callable(get) else None
            found = [p for p, m in modules.items() if head is not None and m is head]
            if not found:
                raise ValueError(f"target 'head': model has no get_classifier() module; {_valid_targets_msg()}")
            paths.append(found[0])
        elif t in BLOCK_TARGETS:
            pat = re.compile(r"(?:.*\.)?" + BLOCK_TARGETS[t])
            found = [p for p in modules if pat.fullmatch(p)]
            if not found:
                raise ValueError(f"target {t!r} matches no module (is this a ViT with blocks?); {_valid_targets_msg()}")
            paths.extend(found)
        elif t in modules and t != "":
            paths.append(t)
        else:
            raise ValueError(f"unknown factorisation target {t!r}; {_valid_targets_msg()}")
    out: list[str] = []
    for p in paths:
        if p not in out:
            out.append(p)
    for p in out:
        if not isinstance(modules[p], nn.Linear):
            raise ValueError(f"target module {p!r} is {type(modules[p]).__name__}, not nn.Linear; {_valid_targets_msg()}")
    return out


def compresses(m: int, n: int, rank: int) -> bool:
    """r(m+n) < mn: rank-r factors of an m x n weight have fewer parameters than the weight."""
    return int(rank) * (m + n) < m * n


def max_compressing_rank(m: int, n: int) -> int:
    """The largest r with r(m+n) < mn (0 when no rank compresses, e.g. a 1 x n head)."""
    return (m * n - 1) // (m + n)


def check_compresses(model: nn.Module, paths: Sequence[str], rank: int) -> None:
    """ValueError naming the first layer of ``paths`` (module paths of ``nn.Linear``s) that rank
    ``rank`` does not compress, with its shape and the largest rank that would. Why refuse: such a
    layer trains at least as many factor parameters as the dense weight and only adds an SVD error."""
    for path in paths:
        m, n = model.get_submodule(path).weight.shape
        if not compresses(m, n, rank):
            best = max_compressing_rank(m, n)
            fix = f"ranks up to {best} compress it" if best else "no rank compresses it: leave it out"
            raise ValueError(f"layer {path!r} (weight {m} x {n}, {m * n} parameters) does not compress at rank "
                             f"{rank}: r(m+n) = {rank * (m + n)} >= mn; {fix}")


def _set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, new)


def factorise_linears(
    model: nn.Module,
    importance: Mapping[str, Tensor] | None,
    rank: int,
    targets: Sequence[str],
) -> int:
    """Replace each target ``nn.Linear`` by a FWSVD-initialised ``LowRankLinear``, in place.

    ``importance`` maps parameter names (``blocks.0.attn.qkv.weight``; a ``module.`` prefix on
    either side is tolerated) to I'; a layer without an entry gets plain SVD. Every target must
    compress at ``rank`` (``check_compresses``; checked before any layer is replaced). The factors
    are trainable iff the replaced weight was. Returns r(m+n) summed over the new layers (their
    factor parameters, trainable or not; biases not included).
    """
    imp = {canonical_name(k): v for k, v in (importance or {}).items()}
    paths = resolve_linear_targets(model, targets)
    check_compresses(model, paths, rank)
    total = 0
    for path in paths:
        lin = model.get_submodule(path)
        assert isinstance(lin, nn.Linear)
        I = imp.get(canonical_name(path) + ".weight")
        new = LowRankLinear.from_linear(lin, I, rank).to(device=lin.weight.device)
        _set_submodule(model, path, new)
        total += new.num_factor_params
    return total
