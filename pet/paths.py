"""Where things live on disk: the models folder, builtin model folders, keys and the ledger.

Relative paths in configuration are resolved against the current working directory at load time, so
Ray replicas (which run elsewhere) always receive absolute paths.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def models_dir(configured: str | None = None) -> Path:
    """The models folder: the configured one, else ``$PET_MODELS_DIR``, else ``<repo>/models``."""
    if configured:
        return Path(configured).expanduser().resolve()
    env = os.environ.get("PET_MODELS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return REPO_ROOT / "models"


def state_dir(configured_models_dir: str | None = None) -> Path:
    """Folder beside the models folder for keys, ledgers and other mutable state."""
    return models_dir(configured_models_dir).parent / ".pet"


def resolve_model(ref: str, configured_models_dir: str | None = None) -> Path:
    """Turn a validated model reference (builtin name or absolute folder) into a folder path."""
    path = Path(ref)
    if path.is_absolute():
        return path
    return models_dir(configured_models_dir) / ref


def set_offline() -> None:
    """Forbid every Hugging Face hub access in this process (call before importing transformers)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
