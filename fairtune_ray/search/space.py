"""The outer loop's search space: mask bits, learning rate and the Fisher-method options.

Each mask bit is its own ``choice([0, 1])`` dimension (named m00, m01, ...) so TPE models every
parameter group separately, as FairTune does. The learning rate is log-uniform. With
``method: fisher`` or ``both`` the EWC strength lambda (log-uniform, with an explicit 0) and gamma
join the space, and, when ``fisher.factorise`` names layers, the SVD rank and the factorised-layer
set (without layers a rank would be a dimension that changes nothing).

With ``peft.methods`` beyond [mask] a categorical ``peft`` dimension joins the space, with its
conditional parameters ``peft_rank``, ``peft_alpha`` and ``peft_targets`` as flat dimensions: a trial
that draws 'mask' ignores them (and 'ia3' ignores rank and alpha), as a trial with ``ewc_on = 0``
ignores ``ewc_lambda``. Why flat: the searcher, its initial points, ASHA's protected points and the
trial records all read flat configs; TPE then credits an ignored value with the trial's result too,
which only blurs, never biases, what it learns about the methods. The mask bits place the adapters.
"""
from __future__ import annotations

from typing import Optional

from ray import tune

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.models.adapters import NO_ADAPTER
from fairtune_ray.training.spec import TrialSpec

FIXED_KEY = "fixed"  # points_to_evaluate may name a fixed mask (a prior) instead of bits


def bit_keys(n_bits: int) -> list[str]:
    width = max(2, len(str(n_bits - 1)))
    return [f"m{i:0{width}d}" for i in range(n_bits)]


def config_bits(config: dict, keys: list[str]) -> str:
    """A trial config's mask as a bit string (e.g. ``"010110"``); values may be floats after a JSON round trip."""
    return "".join(str(int(float(config.get(k, 0)))) for k in keys)


def uses_mask_bits(cfg: ExperimentConfig) -> bool:
    return cfg.search.method in ("fairtune", "both")


def uses_fisher(cfg: ExperimentConfig) -> bool:
    return cfg.search.method in ("fisher", "both")


def factorise_choices(cfg: ExperimentConfig) -> list[str]:
    """The layer sets TPE chooses between, as '+'-joined strings ('' = no factorisation)."""
    return ["", "+".join(cfg.fisher.factorise)] if cfg.fisher.factorise else [""]


def searches_rank(cfg: ExperimentConfig) -> bool:
    """Rank and layer set are searched only with the Fisher method and some layer to factorise."""
    return uses_fisher(cfg) and bool(cfg.fisher.factorise)


def searches_peft(cfg: ExperimentConfig) -> bool:
    """The space has a ``peft`` dimension (``peft.methods`` is more than [mask])."""
    return cfg.peft.searched


def target_choices(cfg: ExperimentConfig) -> list[str]:
    """The target-kind sets TPE chooses between, as '+'-joined strings ('qkv+proj')."""
    return ["+".join(kinds) for kinds in cfg.peft.target_sets]


def _peft_dims(cfg: ExperimentConfig) -> dict:
    return {"peft": tune.choice(list(cfg.peft.methods)), "peft_rank": tune.choice(list(cfg.peft.ranks)),
            "peft_alpha": tune.choice(list(cfg.peft.alphas)), "peft_targets": tune.choice(target_choices(cfg))}


def first_peft_method(cfg: ExperimentConfig) -> str:
    """The method of the baseline points: 'mask' when searched (so all ones is full fine-tuning), else the first."""
    return NO_ADAPTER if NO_ADAPTER in cfg.peft.methods else cfg.peft.methods[0]


def build_param_space(cfg: ExperimentConfig, n_bits: int) -> dict:
    space: dict = {}
    if uses_mask_bits(cfg):
        space.update({k: tune.choice([0, 1]) for k in bit_keys(n_bits)})
    space["lr"] = tune.loguniform(cfg.search.lr_min, cfg.search.lr_max)
    if uses_fisher(cfg):
        # lambda = 0 must be reachable: a switch plus a log-uniform strength.
        space["ewc_on"] = tune.choice([0, 1])
        space["ewc_lambda"] = tune.loguniform(max(cfg.fisher.ewc_lambda_max * 1e-4, 1e-6), max(cfg.fisher.ewc_lambda_max, 1e-5))
        space["gamma"] = tune.choice(list(cfg.fisher.gamma))
    if searches_rank(cfg):
        space["rank"] = tune.choice(list(cfg.fisher.ranks))
        space["factorise"] = tune.choice(factorise_choices(cfg))
    if searches_peft(cfg):
        space.update(_peft_dims(cfg))
    return space


def _point(cfg: ExperimentConfig, n_bits: int, bits: Optional[str], lr: float) -> dict:
    point: dict = {"lr": lr}
    if uses_mask_bits(cfg) and bits is not None:
        point.update({k: int(b) for k, b in zip(bit_keys(n_bits), bits)})
    if uses_fisher(cfg):
        point.update({"ewc_on": 0, "ewc_lambda": max(cfg.fisher.ewc_lambda_max * 1e-2, 1e-5),
                      "gamma": cfg.fisher.gamma[0]})
    if searches_rank(cfg):
        point.update({"rank": cfg.fisher.ranks[0], "factorise": ""})
    if searches_peft(cfg):
        point.update({"peft": first_peft_method(cfg), "peft_rank": cfg.peft.ranks[0],
                      "peft_alpha": cfg.peft.alphas[0], "peft_targets": target_choices(cfg)[0]})
    return point


def baseline_points(cfg: ExperimentConfig, n_bits: int) -> list[dict]:
    """The search's reference points at the configured lr: all ones (fine-tune every group) and all
    zeros (linear probe), or every parameter without a Fisher option; ASHA never stops them."""
    lr = min(max(cfg.train.lr, cfg.search.lr_min), cfg.search.lr_max)
    if not uses_mask_bits(cfg):
        return [_point(cfg, n_bits, None, lr)]
    return [_point(cfg, n_bits, "1" * n_bits, lr), _point(cfg, n_bits, "0" * n_bits, lr)]


def matches_point(config: dict, point: dict) -> bool:
    """True when a trial's config is ``point`` (every key of the point, floats to 1e-12 relative)."""
    for key, want in point.items():
        got = config.get(key)
        if isinstance(want, float) and isinstance(got, (int, float)):
            if abs(got - want) > 1e-12 * max(abs(want), 1e-30):
                return False
        elif got != want and not (isinstance(got, (int, float)) and float(got) == float(want)):
            return False
    return True


def initial_points(cfg: ExperimentConfig, n_bits: int, prior_bits: Optional[list[str]] = None) -> list[dict]:
    """Points every study evaluates first: the baseline points, then (Fisher) the same with EWC on,
    or the Fisher prior's masks."""
    lr = min(max(cfg.train.lr, cfg.search.lr_min), cfg.search.lr_max)
    points = baseline_points(cfg, n_bits)
    if not uses_mask_bits(cfg):
        if uses_fisher(cfg):
            points.append(dict(points[0], ewc_on=1))
        return points
    for bits in prior_bits or []:
        p = _point(cfg, n_bits, bits, lr)
        if p not in points:
            points.append(p)
    return points


def spec_from_trial_config(config: dict, cfg: ExperimentConfig, space_name: str, n_bits: int,
                           seed: int = 0) -> TrialSpec:
    """Turn a Tune config (a point of the space) into the inner loop's TrialSpec."""
    if uses_mask_bits(cfg):
        bits = "".join(str(int(config[k])) for k in bit_keys(n_bits))
        mask = f"{space_name}:{bits}"
    else:
        mask = "full"
    spec = TrialSpec(mask=mask, lr=float(config["lr"]), seed=seed)
    if uses_fisher(cfg):
        spec.ewc_lambda = float(config["ewc_lambda"]) if int(config.get("ewc_on", 0)) else 0.0
        spec.gamma = float(config["gamma"])
        layers = [s for s in str(config.get("factorise", "")).split("+") if s]
        spec.factorise = layers
        spec.rank = int(config["rank"]) if layers else 0
    if searches_peft(cfg) and str(config.get("peft", NO_ADAPTER)) != NO_ADAPTER:
        spec.peft, spec.peft_rank = str(config["peft"]), int(config["peft_rank"])
        spec.peft_alpha = float(config["peft_alpha"])
        spec.peft_targets = [k for k in str(config["peft_targets"]).split("+") if k]
        spec.factorise, spec.rank = [], 0  # adapters and Fisher factors would replace the same layers
    return spec
