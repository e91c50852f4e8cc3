"""Configuration: one pydantic schema (``schema``) and its YAML loader (``loader``)."""

from pet.config.loader import ConfigError, load_config, parse_config
from pet.config.schema import PetConfig

__all__ = ["ConfigError", "PetConfig", "load_config", "parse_config"]
