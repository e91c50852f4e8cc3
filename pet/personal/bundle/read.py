"""The device bundle format: a folder with ``model.onnx`` (+ external data), ``tokenizer.json``,
``chat_template.jinja`` and ``bundle.json``, and its integrity check.

``genai_config.json`` (since issue 25) lets onnxruntime-genai run the same graph. ``bundle.json`` holds the
model id, tier, layer count, quantisation, the ONNX opset, the sha256 of every
other file, the parity numbers measured at export, the creation time, and a ``signature`` slot (``null``
until :mod:`pet.personal.bundle.sign` signs the bundle). Only json/hashlib here: the device imports this.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pet.io import sha256_file

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
TEMPLATE_FILE = "chat_template.jinja"
# Opsets onnxruntime 1.31 runs and our export produces; anything else is refused before loading.
SUPPORTED_OPSETS = range(14, 22)
GENAI_CONFIG_FILE = "genai_config.json"
# Formats this runtime runs (pet.personal.export.quantize.SPECS makes them; a test keeps both lists equal). The
# *-shared formats need onnxruntime's GatherBlockQuantized (1.20+).
QUANTIZATIONS = ("none", "int8", "int4", "int8-shared", "int8b64-shared", "int4-shared", "int4-hqq", "int4-gptq")


class BundleError(Exception):
    """A device bundle is missing, altered, incompatible or was given bad input; the message says which."""


@dataclass
class BundleInfo:
    """The parsed and checked ``bundle.json`` of one bundle folder."""

    path: Path
    model_id: str
    tier: str
    layers: int
    quantization: str
    opset: int
    files: dict[str, str]
    eos_token_ids: list[int]
    num_kv_heads: int
    head_dim: int
    parity: dict[str, Any] = field(default_factory=dict)
    signature: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def model_path(self) -> Path:
        """The ONNX graph file."""
        return self.path / MODEL_FILE

    @property
    def size_bytes(self) -> int:
        """Bytes of every listed file (the model plus its data and tokenizer)."""
        return sum((self.path / rel).stat().st_size for rel in self.files)


def read_bundle(path: str | Path, verify: bool = True) -> BundleInfo:
    """Parse ``bundle.json`` and (``verify``) re-hash every listed file; raises BundleError naming the problem."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle folder {root} does not exist")
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise BundleError(f"{root} is not a device bundle: {MANIFEST} is missing")
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest} is not valid JSON: {err}") from err
    required = ("format", "model_id", "tier", "layers", "quantization", "opset", "files", "eos_token_ids",
                "num_kv_heads", "head_dim")
    missing = [k for k in required if k not in meta]
    if missing:
        raise BundleError(f"{manifest} lacks keys: {', '.join(missing)}")
    if meta["format"] != BUNDLE_FORMAT:
        raise BundleError(f"{manifest}: bundle format {meta['format']} is not supported (expected {BUNDLE_FORMAT})")
    if meta["quantization"] not in QUANTIZATIONS:
        raise BundleError(f"{manifest}: quantization format {meta['quantization']!r} is not supported by this "
                          f"device runtime (it runs {', '.join(QUANTIZATIONS)}); re-export the bundle in one of them "
                          f"or update pet on the device")
    if int(meta["opset"]) not in SUPPORTED_OPSETS:
        raise BundleError(
            f"{manifest}: ONNX opset {meta['opset']} is not supported by this runtime "
            f"(supported {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1}); re-export the bundle"
        )
    files: dict[str, str] = dict(meta["files"])
    for needed in (MODEL_FILE, TOKENIZER_FILE):
        if needed not in files:
            raise BundleError(f"{manifest} does not list {needed}")
    if verify:
        for rel, digest in sorted(files.items()):
            p = root / rel
            if not p.is_file():
                raise BundleError(f"bundle file {rel} is missing from {root}")
            actual = sha256_file(p)
            if actual != digest:
                raise BundleError(f"bundle file {rel} was altered: sha256 {actual[:12]}... != {digest[:12]}... "
                                  f"recorded in {MANIFEST}")
    return BundleInfo(
        path=root, model_id=str(meta["model_id"]), tier=str(meta["tier"]), layers=int(meta["layers"]),
        quantization=meta["quantization"], opset=int(meta["opset"]), files=files,
        eos_token_ids=[int(x) for x in meta["eos_token_ids"]], num_kv_heads=int(meta["num_kv_heads"]),
        head_dim=int(meta["head_dim"]), parity=dict(meta.get("parity") or {}), signature=meta.get("signature"),
        raw=meta,
    )


def model_opset(model_path: str | Path) -> int:
    """The default-domain opset a saved ONNX file declares (reads only the graph header, via onnx if present)."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    for imp in m.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise BundleError(f"{model_path} declares no default-domain opset")
