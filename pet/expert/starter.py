"""Starter experts: the two default domains (``python``, ``chitchat``) shipped inside the package.

Training a domain takes minutes on two cores (``make experts``), so a new user would first meet a T-only
platform. The package therefore carries both domains as ``make experts`` registered them: the PEFT adapter
(weights stored fp16, ~4.9 MB a domain; peft casts them to the base's fp32 when loading), the routing
exemplars, and a ``starter.json`` with the registry manifest's recipe facts (base model, data sha256, data
stats, training metrics and settings) plus the sha256 of every shipped file.

    install_starters(ExpertRegistry.from_config(cfg))   # ["python", "chitchat"] the first time, [] after
    pack(registry, "python")                          # refresh the shipped copy from the registry

A registered domain is never overwritten: ``install_starters`` only fills in missing names, so a user's own
``pet expert register python`` wins. The exemplars are MiniLM (``all-minilm-l6-v2``) embeddings: with another
``embedding.model`` register the domains again instead.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pet.expert.registry import ADAPTER, EXEMPLARS, CorruptAdapterError, ExpertRegistry
from pet.io import atomic_dir, atomic_write_json, sha256_tree

STARTER_ROOT = Path(__file__).with_name("starter")
STARTERS = ("python", "chitchat")
PACK_FILE = "starter.json"
WEIGHTS = "adapter_model.safetensors"
# The recipe `make experts` runs for each starter: `pet expert recipe NAME`, then register with these steps.
RECIPE_STEPS = {"python": 20, "chitchat": 25}


def available(root: Path = STARTER_ROOT) -> list[str]:
    """Starter domains shipped under ``root`` (those with a ``starter.json``)."""
    return [n for n in STARTERS if (root / n / PACK_FILE).is_file()]


def read_pack(name: str, root: Path = STARTER_ROOT) -> dict[str, Any]:
    """The ``starter.json`` of one shipped domain, after checking every file's sha256 against it."""
    folder = root / name
    meta = json.loads((folder / PACK_FILE).read_text())
    actual = sha256_tree(folder, exclude=(PACK_FILE,))
    if actual != meta.get("files"):
        raise CorruptAdapterError(f"starter expert {name!r} under {folder} does not match its {PACK_FILE} "
                                  "(files changed or missing); reinstall pet or run `make experts`")
    return meta


def install_starters(registry: ExpertRegistry, names: tuple[str, ...] = STARTERS, root: Path = STARTER_ROOT,
                     log: Callable[[str], None] = lambda m: None) -> list[str]:
    """Register every shipped starter domain that ``registry`` lacks; returns the names installed."""
    installed = []
    for name in names:
        if name in registry or not (root / name / PACK_FILE).is_file():
            continue
        meta = read_pack(name, root)
        folder = root / name
        exemplars = np.load(folder / EXEMPLARS, allow_pickle=False)
        registry.add(name, folder / ADAPTER, exemplars, meta.get("metrics", {}), meta["base_model"],
                     data_sha256=meta.get("data_sha256"),
                     extra={"data": meta.get("data", {}), "exemplar_source": meta.get("exemplar_source"),
                            "starter": {"packed": meta.get("packed"), "source": meta.get("source_fingerprint")}})
        log(f"installed starter expert {name!r} ({meta.get('data', {}).get('samples', '?')} training samples, "
            f"held-out ppl {meta.get('metrics', {}).get('ppl_base', float('nan')):.2f} -> "
            f"{meta.get('metrics', {}).get('ppl_expert', float('nan')):.2f})")
        installed.append(name)
    return installed


def pack(registry: ExpertRegistry, name: str, root: Path = STARTER_ROOT) -> Path:
    """Write registered domain ``name`` as a shipped starter under ``root/name`` (adapter weights in fp16)."""
    from safetensors.numpy import load_file, save_file

    rec = registry.get(name)
    src = registry.adapter_dir(name, verify=True)
    with atomic_dir(root / name, replace=True) as tmp:
        shutil.copytree(src, tmp / ADAPTER, ignore=shutil.ignore_patterns(WEIGHTS))
        weights = load_file(str(src / WEIGHTS))
        save_file({k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in weights.items()},
                  str(tmp / ADAPTER / WEIGHTS))
        shutil.copy2(rec.path / EXEMPLARS, tmp / EXEMPLARS)
        m = rec.manifest
        atomic_write_json(tmp / PACK_FILE, {
            "name": name, "base_model": rec.base_model, "data_sha256": m.get("data_sha256"),
            "data": m.get("data", {}), "exemplar_source": m.get("exemplar_source"), "metrics": rec.metrics,
            "recipe": f"pet expert recipe {name}; pet expert register {name} --steps {RECIPE_STEPS.get(name, '?')}",
            "source_fingerprint": rec.fingerprint, "packed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": sha256_tree(tmp, exclude=(PACK_FILE,)),
        })
    return root / name
