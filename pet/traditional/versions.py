"""T versions: the model folders ``pet traditional upgrade`` writes, their fingerprints, and the version in force.

    versions = list_versions(models_root)            # [TVersion(name="smollm2-135m-instruct-v1", ...), ...]
    fingerprint = model_fingerprint(folder)          # 16 hex digits of the weights' sha256s
    t = in_force(cfg)                                # TInForce(name, path, source): what T serves now
    use_version(cfg, "smollm2-135m-instruct-v1")     # record it as current (state dir, atomic)
    rollback(cfg)                                    # back to the version in force before it

A version is a plain Hugging Face folder ``<models_dir>/traditional/<base>-v<N>/`` with a ``t_manifest.json``
(parent T and its fingerprint, the merged experts and their adapter fingerprints, method, weights, the gate's
evaluation table, sha256 of every file). Versions are never overwritten: each upgrade takes the next free N.

Which T is in force: a ``traditional.model`` naming a version pins it (the config wins); otherwise the version
recorded by ``pet traditional use`` in ``<state dir>/traditional.json`` (``current`` plus the ``history`` that
``rollback`` walks back), else ``traditional.model`` itself. The record is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pet.config.schema.base import T_VERSION_RE
from pet.io import atomic_write_json, sha256_file
from pet.paths import T_VERSIONS, models_dir, resolve_model, state_dir

T_MANIFEST = "t_manifest.json"
STATE_FILE = "traditional.json"
# The files whose bytes decide what a model computes: its config and its weights.
_WEIGHT_FILE = re.compile(r"(config\.json|.*\.safetensors)")


class VersionError(ValueError):
    """An unknown T version, a corrupt version manifest, or nothing to roll back to."""


@dataclass(frozen=True)
class TVersion:
    """One T version folder and its manifest."""

    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the version's weights (as recorded when it was written)."""
        return str(self.manifest.get("fingerprint", ""))

    @property
    def parent(self) -> dict[str, Any]:
        """``{"name", "fingerprint"}`` of the T it was merged from."""
        return dict(self.manifest.get("parent", {}))


@dataclass(frozen=True)
class TInForce:
    """The T a deployment loads: its name (builtin, folder or version), folder and why it is the one."""

    name: str
    path: Path
    source: str  # "config" (traditional.model), "pinned by config" (a version in traditional.model), "state"


def fingerprint_of_hashes(files: dict[str, str]) -> str:
    """16 hex digits over the sha256s of a model's config and weight files (other files do not count)."""
    picked = {rel: sha for rel, sha in sorted(files.items()) if _WEIGHT_FILE.fullmatch(rel)}
    if not picked:
        raise VersionError("no config.json or *.safetensors among the model's files: nothing to fingerprint")
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def model_fingerprint(folder: str | Path) -> str:
    """Fingerprint of a model folder: from its T manifest, else from the models manifest, else by hashing."""
    folder = Path(folder)
    mf = folder / T_MANIFEST
    if mf.is_file():
        recorded = json.loads(mf.read_text(encoding="utf-8")).get("fingerprint")
        if recorded:
            return str(recorded)
    prepared = folder.parent / "manifest.json"  # `pet models prepare` records sha256s of the builtin models
    if prepared.is_file():
        entry = json.loads(prepared.read_text(encoding="utf-8")).get("models", {}).get(folder.name)
        if entry and entry.get("path") in (folder.name, str(folder)):
            return fingerprint_of_hashes({rel: meta["sha256"] for rel, meta in entry["files"].items()})
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a model folder")
    return fingerprint_of_hashes({p.name: sha256_file(p) for p in folder.iterdir()
                                  if p.is_file() and _WEIGHT_FILE.fullmatch(p.name)})


def versions_root(configured_models_dir: str | None = None) -> Path:
    """``<models_dir>/traditional``: where T versions live."""
    return models_dir(configured_models_dir) / T_VERSIONS


def read_version(root: Path, name: str) -> TVersion:
    """The version ``name`` under ``root``; VersionError when it is not a complete version folder."""
    if not T_VERSION_RE.fullmatch(name or ""):
        raise VersionError(f"{name!r} is not a T version name (NAME-vN, as `pet traditional list` shows)")
    mf = root / name / T_MANIFEST
    if not mf.is_file():
        known = ", ".join(v.name for v in list_versions(root)) or "none"
        raise VersionError(f"unknown T version {name!r} under {root} (versions: {known})")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise VersionError(f"T version {name!r}: {T_MANIFEST} is unreadable ({err})") from None
    return TVersion(name, root / name, manifest)


def list_versions(root: Path) -> list[TVersion]:
    """Complete versions under ``root`` (hidden temp folders of an upgrade in progress are skipped), by number."""
    if not root.is_dir():
        return []
    out = [read_version(root, p.name) for p in root.iterdir()
           if p.is_dir() and not p.name.startswith(".") and T_VERSION_RE.fullmatch(p.name)
           and (p / T_MANIFEST).is_file()]
    return sorted(out, key=lambda v: (v.name.rsplit("-v", 1)[0], int(v.name.rsplit("-v", 1)[1])))


def next_version_name(root: Path, parent_name: str) -> str:
    """``<lineage>-v<N+1>``: the lineage is the parent's builtin name (a version's name without ``-vN``)."""
    lineage = parent_name.rsplit("-v", 1)[0] if T_VERSION_RE.fullmatch(parent_name) else Path(parent_name).name
    # Numbers of every folder ever started, finished or not (".NAME.tmp-*" is an upgrade in progress).
    names = [p.name.lstrip(".").split(".tmp-")[0] for p in root.glob(f"*{lineage}-v*")] if root.is_dir() else []
    used = [int(n.rsplit("-v", 1)[1]) for n in names if T_VERSION_RE.fullmatch(n) and n.startswith(lineage)]
    return f"{lineage}-v{max(used, default=0) + 1}"


# ----------------------------------------------------------------------------------------------------------------
# The version in force


def _state_path(cfg: Any) -> Path:
    return state_dir(cfg.models_dir) / STATE_FILE


def read_state(cfg: Any) -> dict[str, Any]:
    """``{"current": name or None, "history": [names in force before it, oldest first]}``."""
    path = _state_path(cfg)
    if not path.is_file():
        return {"current": None, "history": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise VersionError(f"{path} is unreadable ({err}); remove it to fall back to traditional.model") from None
    return {"current": data.get("current"), "history": list(data.get("history", []))}


def in_force(cfg: Any) -> TInForce:
    """The T that serves: a version pinned by ``traditional.model``, else the recorded one, else the config's."""
    ref = cfg.traditional.model
    if T_VERSION_RE.fullmatch(ref) and not Path(ref).is_absolute():
        read_version(versions_root(cfg.models_dir), ref)  # a clear error when the pinned version is missing
        return TInForce(ref, resolve_model(ref, cfg.models_dir), "pinned by config")
    current = read_state(cfg)["current"]
    if current and current != ref:
        version = read_version(versions_root(cfg.models_dir), current)
        return TInForce(current, version.path, "state")
    return TInForce(ref, resolve_model(ref, cfg.models_dir), "config")


def pin_in_force(cfg: Any) -> Any:
    """A copy of ``cfg`` whose ``traditional.model`` names the T in force: what a deployment is built with, so a
    switch of version changes the T deployment's arguments and Serve replaces its replicas in place.
    ``expert.base_model`` moves with it when it named the same model (E's adapters then need that base)."""
    t = in_force(cfg)
    if t.name == cfg.traditional.model:
        return cfg
    update = {"traditional": cfg.traditional.updated(model=t.name)}
    if cfg.expert.base_model == cfg.traditional.model:  # E shares T's base: it follows T's version too
        update["expert"] = cfg.expert.updated(base_model=t.name)
    return cfg.model_copy(update=update)


def describe(cfg: Any) -> dict[str, Any]:
    """The T in force for ``GET /v1/status``: name, why, fingerprint and (for a version) parent and experts."""
    t = in_force(cfg)
    out: dict[str, Any] = {"model": t.name, "source": t.source, "path": str(t.path)}
    mf = t.path / T_MANIFEST
    if mf.is_file():
        m = json.loads(mf.read_text(encoding="utf-8"))
        out.update(fingerprint=m.get("fingerprint"), parent=m.get("parent", {}).get("name"), method=m.get("method"),
                   experts=[e["name"] for e in m.get("experts", [])])
    return out


def use_version(cfg: Any, name: str) -> tuple[TInForce, TInForce]:
    """Record ``name`` (a version, or ``traditional.model`` itself) as current; returns (before, after)."""
    before = in_force(cfg)
    if before.source == "pinned by config":
        raise VersionError(f"traditional.model pins {before.name!r}; change the config to switch T versions")
    if name != cfg.traditional.model:
        read_version(versions_root(cfg.models_dir), name)
    state = read_state(cfg)
    history = state["history"] + [before.name] if before.name != name else state["history"]
    atomic_write_json(_state_path(cfg), {"current": name, "history": history[-50:]})
    return before, in_force(cfg)


def rollback(cfg: Any) -> tuple[TInForce, TInForce]:
    """Make the version in force before the current one current again; returns (before, after)."""
    state = read_state(cfg)
    if not state["history"]:
        raise VersionError("no earlier T version to roll back to (pet traditional use has not switched versions)")
    before = in_force(cfg)
    previous = state["history"][-1]
    if previous != cfg.traditional.model:
        read_version(versions_root(cfg.models_dir), previous)
    atomic_write_json(_state_path(cfg), {"current": previous, "history": state["history"][:-1]})
    return before, in_force(cfg)
