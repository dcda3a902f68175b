"""Backbones (timm), FairTune parameter masks over registered mask spaces, and the LoRA baseline."""
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
    Mask,
    apply_mask,
    bits_param_names,
    mask_from_bits,
    trainable_param_names,
    tune_bit_keys,
)
from fairtune_ray.models.param_groups import MaskSpaceError, head_param_names, timm_groups
from fairtune_ray.models.spaces import (
    BASELINES,
    SEARCH_SPACES,
    MaskSpace,
    SpaceLayout,
    get_space,
    list_spaces,
    register_space,
    spaces_for,
    unregister_space,
)

__all__ = [
    "BASELINES", "SEARCH_SPACES", "CheckpointError", "LoRALinear", "Mask", "MaskSpace", "MaskSpaceError",
    "SpaceLayout", "apply_lora", "apply_mask", "backbone_data_config", "bits_param_names", "count_parameters",
    "create_backbone", "get_space", "head_param_names", "is_resnet", "is_vit", "list_spaces",
    "load_checkpoint", "lora_target_names", "mask_from_bits", "register_space", "save_backbone",
    "spaces_for", "timm_groups", "trainable_param_names", "tune_bit_keys", "unregister_space",
]
