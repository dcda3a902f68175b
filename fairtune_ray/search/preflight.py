"""Checks that must fail before any Ray process starts, with the config key that is at fault."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

import torch

from fairtune_ray.config import ConfigError, ExperimentConfig
from fairtune_ray.data.groups import coding_for, with_group_column
from fairtune_ray.data.splits import check_split_coverage
from fairtune_ray.models import NO_ADAPTER, Mask, MaskSpaceError, create_backbone, get_space, kinds_reason, peft_method_names
from fairtune_ray.models.lowrank import check_compresses, resolve_linear_targets

if TYPE_CHECKING:
    from fairtune_ray.data.packed import PackedDataset


def structure_model(cfg: ExperimentConfig):
    """The backbone's module structure without downloading weights (mask spaces need only names)."""
    shape_only = cfg.backbone.model_copy(update={"pretrained": False, "checkpoint": None})
    return create_backbone(shape_only, num_classes=1)


def check_mask_space(cfg: ExperimentConfig, model=None):
    model = model if model is not None else structure_model(cfg)
    try:
        return get_space(cfg.mask.space, model)
    except MaskSpaceError as err:
        raise ConfigError(f"mask.space: {err}") from None


def check_mask(cfg: ExperimentConfig, text: str, where: str, model=None) -> Mask:
    """A mask given by hand (``--mask``, ``search.baselines``) fits the backbone: a known space or baseline,
    and exactly the space's number of 0/1 bits. Why here: otherwise only building the trial's model finds
    out, after the data are loaded and the backbone pre-trained, or after a whole search."""
    model = model if model is not None else structure_model(cfg)
    try:
        return Mask.parse(text, model=model)
    except MaskSpaceError as err:
        raise ConfigError(f"{where}: {err}") from None


def check_adapters(cfg: ExperimentConfig, model=None, finetune: Optional[str] = None) -> None:
    """PEFT adapters go into linears of the chosen kinds (qkv, proj, fc1, fc2 in a ViT): a PEFT method in
    ``peft.methods`` needs each of ``peft.target_sets`` to match some, one in ``search.baselines`` (or
    ``finetune``, the method of ``finetune --peft``, checked alone) ``peft.targets``. Why here: on a
    backbone without them (a ResNet) every such trial would train the head alone, after the whole search."""
    searched = [m for m in cfg.peft.methods if m != NO_ADAPTER] if finetune is None else []
    fixed = [b for b in (cfg.search.baselines if finetune is None else [finetune]) if b in peft_method_names()]
    checks = [(f"peft.target_sets[{i}]", kinds, searched) for i, kinds in enumerate(cfg.peft.target_sets) if searched]
    checks += [("peft.targets", cfg.peft.targets, fixed)] if fixed else []
    model = model if model is not None or not checks else structure_model(cfg)
    for where, kinds, methods in checks:
        reason = kinds_reason(model, kinds)
        if reason is not None:
            raise ConfigError(f"{where}: PEFT {methods} on backbone '{cfg.backbone.name}' ({type(model).__name__}): "
                              f"{reason}; name kinds the backbone has, or use masks alone (`peft.methods: [mask]`, "
                              "no PEFT method in `search.baselines`)")


def check_resources(cfg: ExperimentConfig, cluster_address: str | None = None) -> None:
    """A fractional GPU request on a machine without GPUs would leave trials pending forever."""
    gpu = cfg.trial.resources.gpu
    if gpu > 0 and not cluster_address and torch.cuda.device_count() == 0:
        raise ConfigError(
            f"trial.resources.gpu: {gpu} GPU per trial was requested, but this machine has no GPU "
            "(torch.cuda.device_count() == 0); set `gpu: 0` to run the trials on the CPU")
    if 0 < gpu < 1 and cfg.trial.workers > 1:
        raise ConfigError("trial.resources.gpu: a multi-worker trial (trial.workers > 1) needs whole GPUs per worker")
    if gpu > 1 and gpu != int(gpu):
        raise ConfigError(f"trial.resources.gpu: {gpu} is neither a fraction below 1 nor a whole number")


def check_data_coverage(cfg: ExperimentConfig, data: PackedDataset) -> None:
    """Every group of ``data.sensitive_attribute`` (the product groups of a list, after small groups are
    merged) needs both classes in val and test, or its AUC is undefined for the whole search (and an
    empty test split is found only after it): a DataError listing each such group with its counts,
    before any Ray process starts."""
    if cfg.data.source == "synthetic":
        hint = "Change data.synthetic (e.g. more n_samples, val_samples or test_samples, another seed)"
    else:
        hint = ("Choose another data.sensitive_attribute, or prepare the dataset again: `fairtune-ray data prepare` "
                "stratifies a random split by attribute x label (another --seed or --split-fractions may help)")
    groups = coding_for(cfg.data.sensitive_attribute, data)
    check_split_coverage(with_group_column(data.manifest, groups), groups.names, groups.attribute,
                         where=f"data.source '{cfg.data.source}'", hint=hint)


def check_factorisation(cfg: ExperimentConfig, model=None) -> None:
    """With the Fisher method, every ``fisher.factorise`` target exists and the largest of
    ``fisher.ranks`` compresses each (r(m+n) < mn). Why here: otherwise the first trial that draws
    factorisation fails inside a Ray worker, after the data and the Fisher are computed."""
    from fairtune_ray.search.space import searches_rank  # lazy: search.space imports Ray

    if not searches_rank(cfg):
        return
    model = model if model is not None else structure_model(cfg)
    try:
        paths = resolve_linear_targets(model, cfg.fisher.factorise)
    except ValueError as err:
        raise ConfigError(f"fisher.factorise: {err}; on a backbone without those layers (a CNN) set "
                          "`fisher.factorise: []`") from None
    try:
        check_compresses(model, paths, max(cfg.fisher.ranks))
    except ValueError as err:
        raise ConfigError(f"fisher.ranks / fisher.factorise: {err}") from None


def preflight(cfg: ExperimentConfig, cluster_address: str | None = None):
    """Run every check; return the mask space (needed to build the search space)."""
    check_resources(cfg, cluster_address or os.environ.get("RAY_ADDRESS"))
    model = structure_model(cfg)
    space = check_mask_space(cfg, model)
    for i, baseline in enumerate(cfg.search.baselines):
        check_mask(cfg, baseline, f"search.baselines[{i}]", model)
    check_factorisation(cfg, model)
    check_adapters(cfg, model)
    return space
