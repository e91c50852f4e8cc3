"""Load and validate YAML configuration files.

``load_config(path)`` returns a :class:`~pet.config.schema.PetConfig` or raises :class:`ConfigError`
whose message names the file, the key path and what was expected, one line per problem. Without a path it
reads the checkout's ``deployments/default.yaml`` when the package runs from a checkout, else (installed from a
wheel, where that file does not exist) it returns the embedded defaults, which a test keeps equal to the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pet.config.schema import PetConfig
from pet.paths import PACKAGE_PARENT, source_checkout

DEFAULT_CONFIG = PACKAGE_PARENT / "deployments" / "default.yaml"  # exists in a source checkout only
EMBEDDED_DEFAULTS = "<embedded defaults>"
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(ValueError):
    """A configuration file is missing, not YAML, or does not match the schema."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def format_validation_error(err: ValidationError) -> list[str]:
    """One readable line per pydantic error: ``key.path: message (got ...)``."""
    lines = []
    for e in err.errors():
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not part of the schema; check spelling)"
        got = e.get("input")
        got_s = "" if e["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{_key_path(tuple(e['loc']))}: {msg}{got_s}")
    return lines


def parse_config(data: Any, source: str = "<config>") -> PetConfig:
    """Validate an already-parsed mapping."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"<top level>: expected a mapping of keys, got {type(data).__name__}"])
    try:
        return PetConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, format_validation_error(err)) from None


def default_config_source() -> str:
    """What ``load_config(None)`` reads: the checkout's ``deployments/default.yaml``, else the embedded defaults."""
    if source_checkout() is not None and DEFAULT_CONFIG.is_file():
        return str(DEFAULT_CONFIG)
    return EMBEDDED_DEFAULTS


def load_config(path: str | Path | None = None) -> PetConfig:
    """Read and validate a YAML file (default: :func:`default_config_source`)."""
    if path is None:
        source = default_config_source()
        if source == EMBEDDED_DEFAULTS:
            return PetConfig()
        path = Path(source)
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise ConfigError(source, ["file does not exist"])
    if not path.is_file():
        raise ConfigError(source, ["not a regular file"])
    raw = path.read_bytes()
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(source, [f"file is {len(raw)} bytes; the limit is {MAX_CONFIG_BYTES}"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(source, [f"not UTF-8 text (byte {err.start})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(source, [f"{where}not valid YAML: {problem}"]) from None
    return parse_config(data, source)


def dump_config(cfg: PetConfig) -> str:
    """YAML text of a config with every default spelled out."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


DEFAULT_HEADER = """\
# The embedded defaults of pet: every key of the schema (pet/config/schema.py) with its default value.
# Validate with `pet config check deployments/default.yaml`; regenerate with `make default-config`.
"""


def write_default_config(path: str | Path = DEFAULT_CONFIG) -> None:
    """Write the schema defaults as YAML (atomically)."""
    from pet.io import atomic_write_text

    atomic_write_text(path, DEFAULT_HEADER + dump_config(PetConfig()))
