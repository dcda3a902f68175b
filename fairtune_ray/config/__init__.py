"""Experiment configuration: YAML files in experiments/ validated into typed objects.

A bad value or an unknown key fails at load time with its key path (e.g. ``search.asha.grace_period``)
and the reason, before any Ray process starts. Every field carries a description; docs/config.md is
generated from them (``python -m fairtune_ray.config.reference``).
"""
from fairtune_ray.config.base import ConfigError, StrictSection
from fairtune_ray.config.data import DataConfig, SyntheticConfig
from fairtune_ray.config.experiment import ExperimentConfig, TrackingConfig
from fairtune_ray.config.fisher import FisherConfig
from fairtune_ray.config.loading import config_from_dict, load_config
from fairtune_ray.config.model import BackboneConfig, MaskConfig, MicroConfig
from fairtune_ray.config.peft import PeftConfig
from fairtune_ray.config.search import AshaConfig, ResourcesConfig, SearchConfig, TrialConfig
from fairtune_ray.config.train import TrainConfig

__all__ = [
    # loading
    "ConfigError",
    "config_from_dict",
    "load_config",
    # the whole experiment
    "ExperimentConfig",
    # its sections
    "AshaConfig",
    "BackboneConfig",
    "DataConfig",
    "FisherConfig",
    "MaskConfig",
    "MicroConfig",
    "PeftConfig",
    "ResourcesConfig",
    "SearchConfig",
    "SyntheticConfig",
    "TrackingConfig",
    "TrainConfig",
    "TrialConfig",
    # for new sections
    "StrictSection",
]
