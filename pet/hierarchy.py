"""What a new user gets by default: the whole P -> E -> T hierarchy, prepared once and reused after.

- **E**: the starter experts shipped in the package (:mod:`pet.expert.starter`), registered where missing.
- **P**: the default device bundle, the signed int8 export of T's model (``personal.bundle: default``),
  built under ``<models_dir>/bundles/<name>`` and kept while its *recipe* (the source weights' sha256, the
  quantisation, :data:`BUNDLE_RECIPE_VERSION`) is unchanged, so a second run skips the ~2 min export.
- **the router**: ``router.calibration: default`` is the calibration file shipped with the package
  (:data:`DEFAULT_CALIBRATION`), fitted by ``pet router calibrate`` for exactly that P recipe; its ``p_bundle``
  entry names the recipe and :func:`calibration_matches` compares them (a test fails when they drift apart).

    prepared = prepare_hierarchy(cfg, log=print)   # keys, starter experts, default bundle; idempotent
    prepared.bundle                                 # Path of the device bundle P runs
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT = "default"
DEFAULT_QUANTIZE = "int8"
# Bump when the default export changes what P computes (the shipped calibration must then be refitted).
BUNDLE_RECIPE_VERSION = 1
RECIPE_FILE = "recipe.json"
DEFAULT_CALIBRATION = Path(__file__).resolve().parent / "router" / "default_router.yaml"


def _source_sha256(model_ref: str, models_dir: str | None) -> str:
    """Identity of a model: the packaged source file's sha256 for a builtin, else the weights' sha256."""
    from pet.io import sha256_file
    from pet.paths import models_dir as root
    from pet.paths import resolve_model

    try:
        manifest = json.loads((root(models_dir) / "manifest.json").read_text())
        src = manifest["models"][model_ref]["source"]["sha256"]
        if src:
            return str(src)
    except (OSError, KeyError, ValueError, TypeError):
        pass
    folder = resolve_model(model_ref, models_dir)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{folder} has no weights; run `pet models prepare`")
    return hashlib.sha256("".join(sha256_file(w) for w in weights).encode()).hexdigest()


def default_bundle_recipe(cfg: Any) -> dict[str, Any]:
    """What the default P is made from: T's model (by content), the quantisation and the recipe version."""
    return {"source": cfg.traditional.model, "source_sha256": _source_sha256(cfg.traditional.model, cfg.models_dir),
            "quantize": DEFAULT_QUANTIZE, "recipe_version": BUNDLE_RECIPE_VERSION}


def recipe_key(recipe: dict[str, Any]) -> str:
    """Short stable hash of a recipe (the cache key)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def default_bundle_dir(cfg: Any) -> Path:
    """Where the default bundle lives: ``<models_dir>/bundles/<T model>-int8``."""
    from pet.paths import models_dir

    name = Path(cfg.traditional.model).name
    return models_dir(cfg.models_dir) / "bundles" / f"{name}-{DEFAULT_QUANTIZE}"


def resolve_bundle(cfg: Any, value: str | None = None) -> Path | None:
    """``personal.bundle`` (or ``value``) as a folder: ``default`` -> :func:`default_bundle_dir`."""
    value = cfg.personal.bundle if value is None else value
    if not value:
        return None
    return default_bundle_dir(cfg) if value == DEFAULT else Path(value).expanduser()


def ensure_default_bundle(cfg: Any, log: Callable[[str], None] = lambda m: None) -> Path:
    """The default bundle, exported and signed unless one with the same recipe is already there."""
    from pet.io import atomic_write_json
    from pet.paths import resolve_model
    from pet.personal.bundle.write import export_bundle

    out = default_bundle_dir(cfg)
    recipe = default_bundle_recipe(cfg)
    from pet.personal.bundle.sign import (
        BundleSignatureError,
        sign_with_default_key,
        signing_keys_dir,
        trusted_public_key_path,
        verify_bundle,
    )

    keys = signing_keys_dir(cfg)
    try:
        fresh = json.loads((out / RECIPE_FILE).read_text()) == recipe
    except (OSError, ValueError):
        fresh = False
    if fresh:
        try:
            verify_bundle(out, trusted_public_key_path(cfg), check_files=False)
        except BundleSignatureError:
            # Same weights, signed by another cloud key (another keys folder): re-sign, no need to re-export.
            entry = sign_with_default_key(out, keys)
            log(f"device bundle {out} re-signed with this configuration's key {entry['key_id']}")
        log(f"device bundle {out} is up to date (recipe {recipe_key(recipe)})")
        return out
    log(f"exporting the default device bundle ({DEFAULT_QUANTIZE}, signed) to {out}: about 2 minutes, once ...")
    export_bundle(resolve_model(cfg.traditional.model, cfg.models_dir), out, quantize=DEFAULT_QUANTIZE,
                  replace=True, keys_dir=keys, log=lambda m: log(f"  {m}"))
    atomic_write_json(out / RECIPE_FILE, recipe)  # written last: a killed export is rebuilt next time
    return out


def resolve_calibration(value: str | None) -> Path | None:
    """``router.calibration`` as a file: ``default`` -> the shipped :data:`DEFAULT_CALIBRATION`."""
    if not value:
        return None
    return DEFAULT_CALIBRATION if value == DEFAULT else Path(value).expanduser()


def calibration_matches(cfg: Any, path: Path | None = None) -> tuple[bool, str]:
    """(does the calibration file's ``p_bundle`` recipe equal the default P's?, a sentence saying so)."""
    import yaml

    path = path or DEFAULT_CALIBRATION
    fitted_for = (yaml.safe_load(path.read_text()) or {}).get("p_bundle")
    wanted = default_bundle_recipe(cfg)
    if fitted_for == wanted:
        return True, f"{path.name} was fitted for the default P (recipe {recipe_key(wanted)})"
    return False, (f"{path.name} was fitted for P recipe {fitted_for}, but the default P is {wanted}: regenerate "
                   "it (docs/router.md, 'The shipped calibration')")


@dataclass
class Prepared:
    """What :func:`prepare_hierarchy` made ready."""

    bundle: Path
    experts_installed: list[str] = field(default_factory=list)
    experts: list[str] = field(default_factory=list)
    calibration: str = ""


def prepare_hierarchy(cfg: Any, log: Callable[[str], None] = lambda m: None) -> Prepared:
    """Keys, starter experts and the device bundle the default configuration needs; cheap when already done."""
    from pet.expert.registry import ExpertRegistry
    from pet.expert.starter import install_starters
    from pet.security.keys import ensure_keys

    ensure_keys(cfg)
    reg = ExpertRegistry.from_config(cfg)
    installed = install_starters(reg, log=log)
    bundle = resolve_bundle(cfg)
    if bundle is None:
        raise ValueError("personal.bundle is not set: the hierarchy needs a device bundle (`default` builds one)")
    if cfg.personal.bundle == DEFAULT:
        bundle = ensure_default_bundle(cfg, log)
    elif not (bundle / "bundle.json").is_file():
        raise FileNotFoundError(f"personal.bundle {bundle} is not a bundle folder (no bundle.json)")
    cal = resolve_calibration(cfg.router.calibration)
    note = "none: uncalibrated geomean thresholds" if cal is None else str(cal)
    if cal is not None and cfg.router.calibration == DEFAULT and cfg.personal.bundle == DEFAULT:
        ok, why = calibration_matches(cfg, cal)
        note += "" if ok else f" (WARNING: {why})"
    return Prepared(bundle=bundle, experts_installed=installed, experts=reg.names(), calibration=note)
