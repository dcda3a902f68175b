"""Backbones (timm), FairTune parameter masks and the LoRA baseline."""
from fairtune_ray.models.backbones import (
    CheckpointError,
    backbone_data_config,
    count_parameters,
    create_backbone,
    is_resnet,
    is_vit,
    load_checkpoint,
    save_backbone,
)
from fairtune_ray.models.lora import LoRALinear, apply_lora, lora_target_names
from fairtune_ray.models.masks import (
    BASELINES,
    SEARCH_SPACES,
    Mask,
    MaskSpace,
    MaskSpaceError,
    apply_mask,
    bits_param_names,
    get_space,
    head_param_names,
    list_spaces,
    mask_from_bits,
    spaces_for,
    trainable_param_names,
    tune_bit_keys,
)

__all__ = [
    "BASELINES", "SEARCH_SPACES", "CheckpointError", "LoRALinear", "Mask", "MaskSpace", "MaskSpaceError",
    "apply_lora", "apply_mask", "backbone_data_config", "bits_param_names", "count_parameters",
    "create_backbone", "get_space", "head_param_names", "is_resnet", "is_vit", "list_spaces",
    "load_checkpoint", "lora_target_names", "mask_from_bits", "save_backbone", "spaces_for",
    "trainable_param_names", "tune_bit_keys",
]
