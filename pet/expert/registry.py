"""The expert registry: one folder per registered domain under ``models/experts/``.

    reg = ExpertRegistry.from_config(cfg)        # or ExpertRegistry(root)
    reg.names()                                  # ["chitchat", "python"]
    path = reg.adapter_dir("python")             # a PEFT LoRA folder, sha256-checked against the manifest
    vecs = reg.exemplars("python")               # [n, 384] float32 MiniLM routing exemplars

Layout of one domain ``NAME/``::

    adapter/         PEFT LoRA folder (adapter_config.json, adapter_model.safetensors)
    exemplars.npy    [n, dim] float32 L2-normalised embeddings of the domain's example queries
    manifest.json    name, base model id, created, data sha256, metrics, sha256 of every other file

A domain is written with :func:`pet.io.atomic_dir`: it is built in a hidden ``.NAME.tmp-*`` sibling and
renamed into place in one step, so a register killed mid-way leaves no visible half-registered domain, and
``names()`` ignores hidden folders. Readers (the gateway's multiplexed pool) re-read the folder on every
lookup, so a domain added while a gateway runs is visible without a redeploy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pet.io import atomic_dir, atomic_write_json, sha256_file, sha256_tree

MANIFEST = "manifest.json"
ADAPTER = "adapter"
EXEMPLARS = "exemplars.npy"
FORMAT_VERSION = 1
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,38}[a-z0-9])?")
# Files a PEFT LoRA folder must hold to be loadable.
ADAPTER_REQUIRED = ("adapter_config.json",)


class RegistryError(Exception):
    """Base of every registry error."""


class InvalidDomainNameError(RegistryError, ValueError):
    """A domain name is not a slug."""


class DomainExistsError(RegistryError, FileExistsError):
    """The domain is already registered and ``replace`` was not given."""


class UnknownDomainError(RegistryError, KeyError):
    """No complete domain of that name is registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown domain"


class CorruptAdapterError(RegistryError, RuntimeError):
    """A registered file is missing or its sha256 does not match the manifest."""


class BaseMismatchError(RegistryError, RuntimeError):
    """An adapter was trained on another base (T version) than the one it would be served or merged on."""


def base_fingerprint(rec: ExpertRecord, configured_models_dir: str | None = None) -> str:
    """Fingerprint of the T ``rec`` was trained on: recorded at registration (``base_fingerprint``), else that of
    the builtin or folder its manifest names (domains registered before fingerprints were recorded); "" if unknown.
    """
    from pet.config.schema.base import BUILTIN_MODELS
    from pet.paths import resolve_model
    from pet.traditional.versions import model_fingerprint

    recorded = rec.manifest.get("base_fingerprint")
    if recorded:
        return str(recorded)
    name = rec.base_model
    folder = resolve_model(name, configured_models_dir) if name in BUILTIN_MODELS or Path(name).is_absolute() else None
    return model_fingerprint(folder) if folder is not None and folder.is_dir() else ""


def check_base(rec: ExpertRecord, fingerprint: str, base_name: str, configured_models_dir: str | None = None) -> None:
    """Raise :class:`BaseMismatchError` unless ``rec`` was trained on the base with ``fingerprint``."""
    trained_on = base_fingerprint(rec, configured_models_dir)
    if trained_on != fingerprint:
        raise BaseMismatchError(
            f"expert {rec.name!r} was trained on base {rec.base_model} ({trained_on or 'unknown fingerprint'}), "
            f"not on {base_name} ({fingerprint}); retrain it on this base: pet expert register {rec.name} --rebase")


def check_name(name: str) -> str:
    """Return ``name`` if it is a slug (lowercase letters, digits, '-', '_'; 1-40 chars), else raise."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidDomainNameError(
            f"domain name {name!r} is not a slug: use 1-40 lowercase letters, digits, '-' or '_', "
            "starting and ending with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class ExpertRecord:
    """One registered domain as read from disk."""

    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        """Evaluation numbers recorded at registration (perplexities, training time, ...)."""
        return dict(self.manifest.get("metrics", {}))

    @property
    def base_model(self) -> str:
        """Id of the shared base the adapter was trained on."""
        return str(self.manifest.get("base_model", ""))

    @property
    def created(self) -> str:
        """UTC ISO time of registration."""
        return str(self.manifest.get("created", ""))

    @property
    def exemplar_count(self) -> int:
        """Rows in exemplars.npy."""
        return int(self.manifest.get("exemplar_count", 0))

    @property
    def size_bytes(self) -> int:
        """Bytes of every file of the domain (adapter + exemplars + manifest)."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    @property
    def fingerprint(self) -> str:
        """Short hash of the registered file hashes: changes when a domain is replaced (cache key)."""
        files = json.dumps(self.manifest.get("files", {}), sort_keys=True).encode()
        return hashlib.sha256(files).hexdigest()[:16]


class ExpertRegistry:
    """Reads and atomically writes registered expert domains under one root folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    @classmethod
    def from_config(cls, cfg: Any) -> ExpertRegistry:
        """Root = ``cfg.expert.registry_dir`` or ``<models_dir>/experts``."""
        from pet.paths import models_dir

        configured = getattr(cfg.expert, "registry_dir", None)
        root = Path(configured).expanduser() if configured else models_dir(cfg.models_dir) / "experts"
        return cls(root)

    # ------------------------------------------------------------------------------------------------------------
    # Reading

    def names(self) -> list[str]:
        """Sorted names of complete domains; hidden temp folders and folders without a manifest are skipped."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and NAME_RE.fullmatch(p.name)
            and (p / MANIFEST).is_file()
        )

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> ExpertRecord:
        """The record of ``name``; raises :class:`UnknownDomainError` (a KeyError) if not registered."""
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise UnknownDomainError(f"unknown expert domain {name!r}")
        path = self.root / name
        mf = path / MANIFEST
        if not mf.is_file():
            known = ", ".join(self.names()) or "none registered"
            raise UnknownDomainError(f"unknown expert domain {name!r} (registered: {known})")
        try:
            manifest = json.loads(mf.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CorruptAdapterError(f"expert {name!r}: manifest.json is unreadable ({err})") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise CorruptAdapterError(f"expert {name!r}: manifest.json has no 'files' table")
        return ExpertRecord(name=name, path=path, manifest=manifest)

    def records(self) -> list[ExpertRecord]:
        """Every readable domain (unreadable manifests are skipped, not fatal: one bad domain must not hide all)."""
        out = []
        for n in self.names():
            try:
                out.append(self.get(n))
            except (UnknownDomainError, CorruptAdapterError):
                continue
        return out

    def _verify(self, rec: ExpertRecord, prefix: str) -> None:
        expected = {rel: sha for rel, sha in rec.manifest["files"].items() if rel.startswith(prefix)}
        if not expected:
            raise CorruptAdapterError(f"expert {rec.name!r}: manifest lists no {prefix.rstrip('/')} files")
        for rel, sha in expected.items():
            p = rec.path / rel
            if not p.is_file():
                raise CorruptAdapterError(f"expert {rec.name!r}: file {rel} is missing")
            actual = sha256_file(p)
            if actual != sha:
                raise CorruptAdapterError(
                    f"expert {rec.name!r}: sha256 mismatch for {rel} (manifest {sha[:12]}..., file "
                    f"{actual[:12]}...); the adapter is corrupted, re-register with --replace"
                )

    def adapter_dir(self, name: str, verify: bool = True) -> Path:
        """Folder of the domain's PEFT LoRA adapter, after checking every file's sha256 against the manifest."""
        rec = self.get(name)
        if verify:
            self._verify(rec, ADAPTER + "/")
        return rec.path / ADAPTER

    def exemplars(self, name: str, verify: bool = True) -> np.ndarray:
        """[n, dim] float32 routing exemplars of ``name`` (may have 0 rows)."""
        rec = self.get(name)
        if verify:
            self._verify(rec, EXEMPLARS)
        arr = np.load(rec.path / EXEMPLARS, allow_pickle=False)
        if arr.ndim != 2:
            raise CorruptAdapterError(f"expert {name!r}: exemplars.npy must be 2-D, got shape {arr.shape}")
        return arr.astype(np.float32, copy=False)

    # ------------------------------------------------------------------------------------------------------------
    # Writing

    def add(self, name: str, adapter_src: str | Path, exemplars: np.ndarray, metrics: dict[str, Any],
            base_model: str, data_sha256: str | None = None, replace: bool = False,
            extra: dict[str, Any] | None = None) -> ExpertRecord:
        """Copy the adapter folder and exemplars into a new domain atomically; returns its record.

        Raises :class:`InvalidDomainNameError`, :class:`DomainExistsError` (unless ``replace``), or
        ValueError for an adapter folder that is not a PEFT folder / bad exemplar array. Nothing is visible
        under the root until the whole domain is written.
        """
        check_name(name)
        adapter_src = Path(adapter_src)
        missing = [f for f in ADAPTER_REQUIRED if not (adapter_src / f).is_file()]
        if not adapter_src.is_dir() or missing:
            raise ValueError(f"{adapter_src} is not a PEFT adapter folder (missing {', '.join(missing) or 'folder'})")
        ex = np.asarray(exemplars, dtype=np.float32)
        if ex.ndim != 2:
            raise ValueError(f"exemplars must be a 2-D array [n, dim], got shape {ex.shape}")
        final = self.root / name
        if (final / MANIFEST).is_file() and not replace:
            raise DomainExistsError(f"expert domain {name!r} already exists; pass --replace to overwrite it")
        self.root.mkdir(parents=True, exist_ok=True)
        # A folder without a manifest is debris (e.g. a manual copy): replacing it is safe.
        with atomic_dir(final, replace=True) as tmp:
            shutil.copytree(adapter_src, tmp / ADAPTER)
            np.save(tmp / EXEMPLARS, ex, allow_pickle=False)
            files = sha256_tree(tmp)
            manifest = {
                "format": FORMAT_VERSION,
                "name": name,
                "base_model": base_model,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "data_sha256": data_sha256,
                "metrics": metrics,
                "exemplar_count": int(ex.shape[0]),
                "exemplar_dim": int(ex.shape[1]),
                "files": files,
                **(extra or {}),
            }
            # The manifest is written last inside the temp folder; the rename publishes everything at once.
            atomic_write_json(tmp / MANIFEST, manifest)
        return self.get(name)

    def remove(self, name: str) -> None:
        """Unregister ``name``: renamed to a hidden folder first (atomic for readers), then deleted."""
        check_name(name)
        path = self.root / name
        if not path.is_dir():
            raise UnknownDomainError(f"unknown expert domain {name!r}")
        trash = self.root / f".{name}.removed-{os.getpid()}-{time.time_ns()}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def sweep(self, min_age_s: float = 3600.0) -> list[str]:
        """Delete hidden leftovers of crashed registers/removals older than ``min_age_s``; returns their names.

        The age limit keeps a register that is still running in another process safe.
        """
        if not self.root.is_dir():
            return []
        gone = []
        now = time.time()
        for p in self.root.iterdir():
            leftover = ".tmp-" in p.name or ".removed-" in p.name or ".old-" in p.name
            if p.is_dir() and p.name.startswith(".") and leftover and now - p.stat().st_mtime >= min_age_s:
                shutil.rmtree(p, ignore_errors=True)
                gone.append(p.name)
        return sorted(gone)
