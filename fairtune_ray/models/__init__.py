"""Backbones (timm), FairTune parameter masks over registered mask spaces, and PEFT adapters (HF peft)
placed by the mask."""
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
from fairtune_ray.models.adapters import (
    DEFAULT_KINDS,
    NO_ADAPTER,
    AdapterSpec,
    adapted_modules,
    has_adapters,
    kinds_reason,
    merge_adapters,
    peft_method_names,
    register_peft,
)
from fairtune_ray.models.masks import (
    Mask,
    apply_mask,
    bits_param_names,
    mask_adapters,
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
    # backbones
    "CheckpointError", "backbone_data_config", "count_parameters", "create_backbone", "is_resnet", "is_vit",
    "load_checkpoint", "save_backbone",
    # masks and their spaces
    "BASELINES", "SEARCH_SPACES", "Mask", "MaskSpace", "MaskSpaceError", "SpaceLayout", "apply_mask",
    "bits_param_names", "get_space", "head_param_names", "list_spaces", "mask_from_bits", "register_space",
    "spaces_for", "timm_groups", "trainable_param_names", "tune_bit_keys", "unregister_space",
    # PEFT methods (HF peft), placed by the mask
    "DEFAULT_KINDS", "NO_ADAPTER", "AdapterSpec", "adapted_modules", "has_adapters", "kinds_reason",
    "mask_adapters", "merge_adapters", "peft_method_names", "register_peft",
]
