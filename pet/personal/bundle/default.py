"""The default P: T's model exported to a signed int8 device bundle, built once and kept while its recipe holds.

``personal.bundle: default`` names it. The bundle is built under ``<models_dir>/bundles/<name>`` and kept while
its *recipe* (the source weights' sha256, the quantisation, :data:`BUNDLE_RECIPE_VERSION`) is unchanged, so a
second run skips the ~2 min export. The router's shipped calibration names the recipe it was fitted for
(:func:`pet.hierarchy.calibration_matches`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT = "default"
DEFAULT_QUANTIZE = "int8"
# Bump when the default export changes what P computes (the shipped calibration must then be refitted).
BUNDLE_RECIPE_VERSION = 1
RECIPE_FILE = "recipe.json"


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
