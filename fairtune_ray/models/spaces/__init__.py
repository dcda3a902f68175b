"""Mask spaces, one module each, registered on import (see ``registry``).

A new space is a new module in this package with one ``@register_space`` builder: importing the
package imports every module in it. The built-in spaces come first, in the order ``list_spaces``
reports (and the CLI shows): searched spaces, then baselines; others follow by module name.
"""
import sys

from fairtune_ray.common.modules import import_submodules
from fairtune_ray.models.spaces.registry import (
    FitCheck,
    MaskSpace,
    SpaceLayout,
    SpaceSpec,
    baseline_names,
    fits_any,
    get_space,
    is_baseline,
    list_spaces,
    register_space,
    space_spec,
    spaces_for,
    unregister_space,
)

import_submodules(sys.modules[__name__], first=("block", "branches", "attn_params", "stage", "baselines"),
                  skip=("registry",))

SEARCH_SPACES: tuple[str, ...] = tuple(list_spaces())
"""The built-in spaces with bits (searched by Tune); ``list_spaces()`` also sees ones added later."""
BASELINES: tuple[str, ...] = tuple(baseline_names())
"""The built-in fixed masks without bits, written by their bare names."""

__all__ = [
    "BASELINES", "SEARCH_SPACES", "FitCheck", "MaskSpace", "SpaceLayout", "SpaceSpec", "baseline_names",
    "fits_any", "get_space", "is_baseline", "list_spaces", "register_space", "space_spec", "spaces_for",
    "unregister_space",
]
