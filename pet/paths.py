"""Where things live on disk: the models folder and the state folder (keys, ledger, the running deployment's record).

:func:`layout` decides the defaults and every command asks it (through :func:`models_dir` and :func:`state_dir`),
so a wheel installed in site-packages, an editable checkout and a second checkout's environment all agree.
The first rule that applies wins:

1. ``$PET_HOME`` is set: models in ``$PET_HOME/models``, state in ``$PET_HOME/state``.
2. Run from a source checkout: this package sits in a folder whose ``pyproject.toml`` names the project ``pet``
   *and* the current working directory is inside that folder: ``<checkout>/models`` and ``<checkout>/.pet``.
3. Otherwise the per-user data folder ``$XDG_DATA_HOME/pet`` (default ``~/.local/share/pet``): ``models``, ``state``.

On top of that, ``$PET_MODELS_DIR`` moves the models folder and ``$PET_STATE_DIR`` the state folder, and a
config's ``models_dir`` moves both (state to ``<models_dir>/../.pet``, as before). The detached ``pet deploy``
receives its parent's folders in ``PET_MODELS_DIR`` and ``PET_STATE_DIR`` (:func:`pinned_paths`), so both agree on
where the deployment's record and log go; a local Ray's processes inherit that environment and working directory.

Relative paths in configuration are resolved against the current working directory at load time, so
Ray replicas (which run elsewhere) always receive absolute paths.
"""

from __future__ import annotations

import functools
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # a checkout's root, or site-packages when installed
ENV_HOME, ENV_MODELS, ENV_STATE = "PET_HOME", "PET_MODELS_DIR", "PET_STATE_DIR"


@dataclass(frozen=True)
class Layout:
    """The default folders of this process and the rule that chose them."""

    models: Path
    state: Path
    rule: str  # "PET_HOME", "checkout" or "user data folder", plus any PET_MODELS_DIR / PET_STATE_DIR override

    def describe(self) -> str:
        """One line for people: both folders and why."""
        return f"models {self.models}, state {self.state} ({self.rule})"


@functools.lru_cache(maxsize=8)
def _names_pet(root: Path) -> bool:
    try:
        meta = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("project", {}).get("name") == "pet"


def source_checkout() -> Path | None:
    """The checkout this package is imported from (editable install), or None when it is installed from a wheel."""
    return PACKAGE_PARENT if _names_pet(PACKAGE_PARENT) else None


def _cwd_inside(root: Path) -> bool:
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the working directory was removed
        return False
    return cwd == root or root in cwd.parents


def user_data_dir() -> Path:
    """``$XDG_DATA_HOME/pet``, else ``~/.local/share/pet`` (a relative XDG_DATA_HOME is ignored, as the spec says)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "pet"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else None


def layout() -> Layout:
    """The default models and state folders for this process (see the module docstring for the rule)."""
    home = _env_path(ENV_HOME)
    checkout = source_checkout()
    if home is not None:
        models, state, rule = home / "models", home / "state", ENV_HOME
    elif checkout is not None and _cwd_inside(checkout):
        models, state, rule = checkout / "models", checkout / ".pet", f"checkout {checkout}"
    else:
        base = user_data_dir()
        models, state, rule = base / "models", base / "state", "user data folder"
    overrides = [name for name in (ENV_MODELS, ENV_STATE) if os.environ.get(name)]
    if overrides:
        rule += "; " + ", ".join(overrides)
    return Layout(_env_path(ENV_MODELS) or models, _env_path(ENV_STATE) or state, rule)


def models_dir(configured: str | None = None) -> Path:
    """The models folder: ``configured`` (a config's ``models_dir``), else :func:`layout`'s."""
    if configured:
        return Path(configured).expanduser().resolve()
    return layout().models


def state_dir(configured_models_dir: str | None = None) -> Path:
    """The folder for keys, ledgers and the deployment record: beside a configured models folder
    (``<models_dir>/../.pet``), else :func:`layout`'s."""
    if configured_models_dir:
        return models_dir(configured_models_dir).parent / ".pet"
    return layout().state


T_VERSIONS = "traditional"  # <models_dir>/traditional/NAME-vN: the T versions `pet traditional upgrade` writes


def resolve_model(ref: str, configured_models_dir: str | None = None) -> Path:
    """Turn a validated model reference (builtin name, absolute folder, or T version ``NAME-vN``) into a folder."""
    path = Path(ref)
    if path.is_absolute():
        return path
    root = models_dir(configured_models_dir)
    version = root / T_VERSIONS / ref
    return version if not (root / ref).exists() and version.is_dir() else root / ref


def pinned_paths() -> dict[str, str]:
    """``PET_MODELS_DIR`` and ``PET_STATE_DIR`` set to this process's defaults: the environment a child process
    needs to resolve the same folders from any working directory."""
    current = layout()
    return {ENV_MODELS: str(current.models), ENV_STATE: str(current.state)}


def set_offline() -> None:
    """Forbid every Hugging Face hub access in this process (call before importing transformers)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
