"""What every config section shares: strict validation and the error type."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from fairtune_ray.common.errors import InputError


class ConfigError(InputError):
    """A configuration problem; the message names the file and key path."""


class StrictSection(BaseModel):
    """A config section: an unknown key is an error, and so is a bad value assigned later."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
