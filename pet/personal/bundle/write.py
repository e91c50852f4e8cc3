"""``export_bundle``: a Hugging Face causal-LM folder -> a device bundle folder, atomically.

    from pet.personal.bundle.write import export_bundle
    export_bundle("models/smollm2-135m-instruct", "models/bundles/smollm2-int8", quantize="int8")

The bundle is built in a hidden temp sibling (:func:`pet.io.atomic_dir`) and renamed into place only after
export, quantisation, hashing and the parity check all succeeded, so an existing bundle is never half
replaced. The last step signs ``bundle.json`` with the cloud's bundle-signing key
(:func:`pet.personal.bundle.sign.sign_with_default_key`, creating the key on first use): devices refuse unsigned
bundles unless told otherwise (``--allow-unsigned``, development only).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pet.io import atomic_dir, atomic_write_json, sha256_tree
from pet.personal.bundle.read import (
    BUNDLE_FORMAT,
    GENAI_CONFIG_FILE,
    MANIFEST,
    MODEL_FILE,
    QUANTIZATIONS,
    TEMPLATE_FILE,
    TOKENIZER_FILE,
    model_opset,
)
from pet.personal.export.onnx import ExportError, export_fp32
from pet.personal.export.onnx import quantize as quantize_onnx


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def tokenizer_facts(model_dir: Path) -> tuple[str | None, dict[str, str], list[int]]:
    """Chat template, special-token strings and end-of-turn token ids of a HF model folder."""
    tcfg = _read_json(model_dir / "tokenizer_config.json")
    template = tcfg.get("chat_template")
    if (model_dir / TEMPLATE_FILE).is_file():
        template = (model_dir / TEMPLATE_FILE).read_text(encoding="utf-8")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    special = {k: v for k in ("bos_token", "eos_token", "unk_token", "pad_token")
               if isinstance(v := tcfg.get(k), str)}
    vocab = {t["content"]: t["id"] for t in _read_json(model_dir / TOKENIZER_FILE).get("added_tokens", [])}
    eos: set[int] = set()
    # Same set the torch tiers stop on (pet.models.lm.CausalLM._eos_ids): tokenizer eos, generation eos, im_end.
    if special.get("eos_token") in vocab:
        eos.add(vocab[special["eos_token"]])
    for cfg in (_read_json(model_dir / "generation_config.json"), _read_json(model_dir / "config.json")):
        e = cfg.get("eos_token_id")
        eos.update([e] if isinstance(e, int) else (e or []))
    if "<|im_end|>" in vocab:
        eos.add(vocab["<|im_end|>"])
    return template, special, sorted(int(x) for x in eos)


def genai_config(cfg: dict[str, Any], eos: list[int], special_ids: dict[str, int], share_buffer: bool,
                 threads: int = 1) -> dict[str, Any]:
    """The ``genai_config.json`` that lets onnxruntime-genai run the bundle's graph (same input/output names).

    ``share_buffer`` (past and present KV in one preallocated buffer) needs GroupQueryAttention, i.e. the pet
    graph. The device runtime overlays ``intra_op_num_threads`` at load time, so the signed file stays as is.
    """
    heads = int(cfg["num_attention_heads"])
    context = int(cfg.get("max_position_embeddings", 2048))
    eos_main = eos[0] if eos else 0
    return {
        "model": {
            "type": "llama", "vocab_size": int(cfg["vocab_size"]), "context_length": context,
            "bos_token_id": special_ids.get("bos_token", eos_main), "eos_token_id": eos,
            "pad_token_id": special_ids.get("pad_token", eos_main),
            "decoder": {
                "filename": MODEL_FILE,
                "session_options": {"log_id": "pet-genai", "intra_op_num_threads": threads,
                                    "inter_op_num_threads": 1},
                "head_size": int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
                "hidden_size": int(cfg["hidden_size"]), "num_attention_heads": heads,
                "num_hidden_layers": int(cfg["num_hidden_layers"]),
                "num_key_value_heads": int(cfg.get("num_key_value_heads", heads)),
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"max_length": context, "past_present_share_buffer": share_buffer, "do_sample": False,
                   "num_beams": 1, "top_k": 1, "top_p": 1.0, "temperature": 1.0, "min_length": 0,
                   "repetition_penalty": 1.0},
    }


def write_manifest(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Hash every file except bundle.json into ``meta['files']`` and write bundle.json atomically."""
    meta = dict(meta)
    meta["files"] = sha256_tree(folder, exclude=(MANIFEST,))
    meta.setdefault("signature", None)
    atomic_write_json(folder / MANIFEST, meta)
    return meta


def _calibration(mode: str, fp32: Path, model_dir: Path, log: Callable[[str], None]) -> list | None:
    """Calibration feeds for the data-aware formats (GPTQ); None for the others."""
    from pet.personal.export.quantize import SPECS, calibration_feeds, default_calibration_texts

    if mode not in SPECS or SPECS[mode].algo != "gptq":
        return None
    import onnx
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    texts = default_calibration_texts()
    log(f"calibration: {len(texts)} texts (training-side pydoc pages and chat conversations)")
    graph = onnx.load(str(fp32), load_external_data=False)
    return calibration_feeds(graph, texts, lambda t: tok.encode(t, add_special_tokens=False).ids)


def _check_source(model_dir: Path, out_dir: Path, mode: str, replace: bool) -> dict[str, Any]:
    """The model's config.json, after refusing what cannot make a bundle (before any work)."""
    if mode not in QUANTIZATIONS:
        raise ExportError(f"unknown quantisation {mode!r} (choose {', '.join(QUANTIZATIONS)})")
    cfg = _read_json(model_dir / "config.json")
    if not cfg:
        raise FileNotFoundError(f"{model_dir} is not a model folder (no config.json)")
    if not (model_dir / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(f"{model_dir} has no {TOKENIZER_FILE} (the device runtime needs a fast tokenizer)")
    if out_dir.exists() and not replace:
        raise FileExistsError(f"{out_dir} already exists (use --replace to swap it atomically)")
    return cfg


def _fp32_graph(model_dir: Path, work: Path, exporter: str, from_onnx: str | Path | None,
                log: Callable[[str], None]) -> tuple[Path, str]:
    """(fp32 ONNX graph with KV cache, the exporter that made it): exported into ``work``, or ``from_onnx``."""
    if from_onnx is not None:
        fp32 = Path(from_onnx)
        if not fp32.is_file():
            raise FileNotFoundError(f"{fp32} does not exist")
        return fp32, exporter if exporter != "auto" else "given"  # the caller says how from_onnx was made
    from pet.personal.export import llama_graph

    if exporter == "auto":
        exporter = "pet" if llama_graph.supported(model_dir) else "optimum"
    log(f"exporting {model_dir.name} to ONNX with KV cache ({exporter})")
    if exporter == "pet":
        return llama_graph.build_llama_onnx(model_dir, work / "fp32" / MODEL_FILE), exporter
    if exporter == "optimum":
        return export_fp32(model_dir, work / "fp32"), exporter
    raise ExportError(f"unknown exporter {exporter!r} (choose auto, pet or optimum)")


def _write_tokenizer_files(model_dir: Path, tmp: Path, cfg: dict[str, Any], template: str | None,
                           special: dict[str, str], eos: list[int], share_buffer: bool) -> None:
    """Tokenizer, chat template and onnxruntime-genai config beside the graph."""
    shutil.copy2(model_dir / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
    if template:
        (tmp / TEMPLATE_FILE).write_text(template, encoding="utf-8")
    vocab = {t["content"]: t["id"] for t in _read_json(model_dir / TOKENIZER_FILE).get("added_tokens", [])}
    special_ids = {k: vocab[v] for k, v in special.items() if v in vocab}
    atomic_write_json(tmp / GENAI_CONFIG_FILE, genai_config(cfg, eos, special_ids, share_buffer=share_buffer),
                      mode=0o644)


def _bundle_meta(model_dir: Path, cfg: dict[str, Any], graph: Path, tier: str, mode: str, exporter: str,
                 special: dict[str, str], eos: list[int], model_id: str | None) -> dict[str, Any]:
    """The bundle.json record before hashing, parity and signature."""
    heads = int(cfg["num_attention_heads"])
    return {
        "format": BUNDLE_FORMAT,
        # pet distill writes OUT/model: name the bundle after OUT then.
        "model_id": model_id or (model_dir.parent.name if model_dir.name == "model" else model_dir.name),
        "source": str(model_dir),
        "tier": tier,
        "architecture": (cfg.get("architectures") or ["?"])[0],
        "layers": int(cfg["num_hidden_layers"]),
        "hidden_size": int(cfg["hidden_size"]),
        "num_kv_heads": int(cfg.get("num_key_value_heads", heads)),
        "head_dim": int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
        "vocab_size": int(cfg["vocab_size"]),
        "max_context": int(cfg.get("max_position_embeddings", 2048)),
        "quantization": mode,
        "exporter": exporter,
        "opset": model_opset(graph),
        "eos_token_ids": eos,
        "special_tokens": special,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "parity": None,
        "signature": None,
    }


def export_bundle(model_dir: str | Path, out_dir: str | Path, quantize: str = "int8", tier: str = "P",
                  replace: bool = False, model_id: str | None = None, parity: bool = True,
                  from_onnx: str | Path | None = None, parity_texts: list[str] | None = None,
                  parity_prompts: list[str] | None = None, exporter: str = "auto", sign: bool = True,
                  keys_dir: str | Path | None = None, log: Callable[[str], None] = lambda m: None) -> Path:
    """Export ``model_dir`` to the bundle folder ``out_dir``; returns ``out_dir``.

    ``quantize`` is a format of :data:`pet.personal.export.quantize.SPECS` (none, int8, int4, int8-shared, ...).
    ``exporter``: ``optimum`` (traced ``text-generation-with-past``), ``pet`` (the compact graph of
    :mod:`pet.personal.export.llama_graph`, plain Llama checkpoints only) or ``auto`` (``pet`` where supported).
    ``from_onnx`` reuses an fp32 ``model.onnx`` exported earlier.
    ``parity=False`` skips the parity check (tests of bad bundles only). ``sign`` (default) signs the bundle with
    the signing key in ``keys_dir`` (default :func:`pet.personal.bundle.sign.signing_keys_dir`); ``sign=False`` leaves
    ``signature: null`` (a development bundle the device runs only with ``allow_unsigned``).
    Raises FileExistsError when ``out_dir`` exists and not ``replace``; ExportError when a step fails.
    """
    mode = quantize
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir)
    cfg = _check_source(model_dir, out_dir, mode, replace)
    t0 = time.perf_counter()
    template, special, eos = tokenizer_facts(model_dir)
    with atomic_dir(out_dir, replace=replace) as tmp, tempfile.TemporaryDirectory(prefix=".pet-export-",
                                                                                  dir=out_dir.parent) as work:
        fp32, exporter = _fp32_graph(model_dir, Path(work), exporter, from_onnx, log)
        log(f"quantisation: {mode}")
        quantize_onnx(fp32, tmp / MODEL_FILE, mode, calibration=_calibration(mode, fp32, model_dir, log), log=log)
        _write_tokenizer_files(model_dir, tmp, cfg, template, special, eos, share_buffer=exporter == "pet")
        meta = _bundle_meta(model_dir, cfg, tmp / MODEL_FILE, tier, mode, exporter, special, eos, model_id)
        write_manifest(tmp, meta)
        if parity:
            from pet.personal.export.parity import measure_parity

            log("parity check against PyTorch fp32")
            meta["parity"] = measure_parity(model_dir, tmp, prompts=parity_prompts, texts=parity_texts, log=log)
            write_manifest(tmp, meta)
        meta["export_seconds"] = round(time.perf_counter() - t0, 1)
        write_manifest(tmp, meta)
        if sign:
            from pet.personal.bundle.sign import sign_with_default_key

            entry = sign_with_default_key(tmp, keys_dir)
            log(f"signed with bundle-signing key {entry['key_id']}")
    log(f"bundle written to {out_dir} ({time.perf_counter() - t0:.0f} s)")
    return out_dir
