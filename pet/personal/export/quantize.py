"""Weight-only quantisation formats of a device bundle, by name (``pet export --quantize NAME``).

Every format is made by onnxruntime's own ``MatMulNBitsQuantizer`` (block-wise weight-only ``MatMulNBits``, the
head included); what differs is the algorithm that picks the integers and whether the embedding is quantised:

- ``int8`` / ``int4``: round-to-nearest, symmetric, blocks of 32 (the formats before issue 25); the token
  embedding stays fp32 (113 MB of SmolLM2's bundle).
- ``*-shared`` formats: the embedding *shares* the LM head's quantised table. A tied model's head is the
  embedding transposed, so after quantisation the head's ``MatMulNBits`` weight already holds the embedding,
  block-quantised along the hidden axis. onnxruntime's ``GatherBlockQuantized`` reads rows of that same
  initializer (through a ``Reshape``: the two kernels want 3-D and 2-D views), so the fp32 table is dropped and
  nothing is stored twice. Untied models keep an fp32 embedding (a warning is logged).
- ``int4-hqq``: half-quadratic quantisation (HQQ: scales and float zero points optimised to minimise the
  weight error; no calibration data).
- ``int4-gptq``: GPTQ (error-compensating, Hessian from calibration text: training-side pydoc pages and
  chat-dataset conversations, never the held-out texts); asymmetric with integer zero points.

``QUANTIZATIONS`` in :mod:`pet.personal.bundle.read` lists the names the device runtime accepts; a test keeps the two
in step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantSpec:
    """One named bundle format: bits (None: fp32), block size, algorithm and whether the embedding is shared."""

    name: str
    bits: int | None
    block_size: int = 32
    algo: str = "rtn"  # rtn | hqq | gptq
    shared_embedding: bool = False
    description: str = ""


SPECS: dict[str, QuantSpec] = {s.name: s for s in (
    QuantSpec("none", None, description="fp32 as exported"),
    QuantSpec("int8", 8, description="int8 weights (RTN, blocks of 32), fp32 embedding"),
    QuantSpec("int4", 4, description="int4 weights (RTN, blocks of 32), fp32 embedding"),
    QuantSpec("int8-shared", 8, shared_embedding=True,
              description="int8 weights (RTN, blocks of 32), embedding shares the int8 head table"),
    QuantSpec("int8b64-shared", 8, block_size=64, shared_embedding=True,
              description="int8 weights (RTN, blocks of 64), embedding shares the int8 head table"),
    QuantSpec("int4-shared", 4, shared_embedding=True,
              description="int4 weights (RTN, blocks of 32), embedding shares the int4 head table"),
    QuantSpec("int4-hqq", 4, algo="hqq", description="int4 weights (HQQ, blocks of 32), fp32 embedding"),
    QuantSpec("int4-gptq", 4, algo="gptq", shared_embedding=True,
              description="int4 weights (GPTQ on calibration text, blocks of 32), shared embedding"),
)}


class QuantizeError(RuntimeError):
    """A quantisation step failed; the message names the format and the step."""


# ------------------------------------------------------------------------------------------------------------------
# Calibration (GPTQ)


def calibration_feeds(model: Any, texts: Sequence[str], encode: Callable[[str], list[int]],
                      max_tokens: int = 256) -> list[dict[str, np.ndarray]]:
    """One full-prompt feed per text for the KV-cache graph ``model`` (empty past, positions from 0)."""
    feeds = []
    past = [i for i in model.graph.input if i.name.startswith("past_key_values.")]
    for text in texts:
        ids = encode(text)[:max_tokens]
        if len(ids) < 8:
            continue
        f = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
             "position_ids": np.arange(len(ids), dtype=np.int64)[None]}
        for p in past:
            dims = [d.dim_value for d in p.type.tensor_type.shape.dim]
            f[p.name] = np.zeros((1, dims[1], 0, dims[3]), np.float32)
        feeds.append({k: v for k, v in f.items() if k in {i.name for i in model.graph.input}})
    return feeds


def default_calibration_texts(n: int = 32) -> list[str]:
    """Calibration text installed with the project: training-side pydoc pages and chat conversations."""
    from pet.personal.distill.data import chitchat_texts, pydoc_texts

    docs = pydoc_texts(("json", "collections", "itertools", "functools", "pathlib", "re", "string", "textwrap"))
    chats = chitchat_texts(heldout=False, limit=n // 2)
    return (docs[: n - len(chats)] + chats)[:n]


# ------------------------------------------------------------------------------------------------------------------
# The shared embedding


def _tied_head(model: Any) -> tuple[str, str] | None:
    """(embedding initializer, head output) when the fp32 graph's head weight is the embedding transposed."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits
               and n.input[1] == "input_ids" and len(inits[n.input[0]].dims) == 2]
    if len(gathers) != 1:
        return None
    table = inits[gathers[0].input[0]]
    vocab, hidden = table.dims
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits and list(inits[n.input[1]].dims) == [hidden, vocab]:
            emb, head = numpy_helper.to_array(table), numpy_helper.to_array(inits[n.input[1]])
            if np.array_equal(emb.T, head):
                return table.name, n.output[0]
    return None


def share_embedding(model: Any, table_name: str, head_output: str) -> bool:
    """Replace ``Gather(table)`` by ``GatherBlockQuantized`` over the quantised head's weight; drop the table.

    Needs a symmetric head (no zero points): the gather then uses the same implicit zero point as
    ``MatMulNBits`` (2^(bits-1)). Returns False (graph unchanged) when the head is not a plain MatMulNBits.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    head = next((n for n in g.node if n.op_type == "MatMulNBits" and n.output[0] == head_output), None)
    if head is None or len(head.input) > 3 and head.input[3]:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    inits = {i.name: i for i in g.initializer}
    vocab = int(attrs["N"])
    shape_name = f"{table_name}_shared_shape"
    g.initializer.append(numpy_helper.from_array(np.array([vocab, -1], np.int64), shape_name))
    data, scales = f"{table_name}_shared_q", f"{table_name}_shared_scales"
    idx = next(i for i, n in enumerate(g.node) if n.op_type == "Gather" and n.input[0] == table_name)
    gather = g.node[idx]
    new = [helper.make_node("Reshape", [head.input[1], shape_name], [data], name=data + "_reshape"),
           helper.make_node("Reshape", [head.input[2], shape_name], [scales], name=scales + "_reshape"),
           helper.make_node("GatherBlockQuantized", [data, gather.input[1], scales], [gather.output[0]],
                            name=gather.name or "embed_gather_q", domain="com.microsoft", gather_axis=0,
                            quantize_axis=1, block_size=int(attrs["block_size"]), bits=int(attrs["bits"]))]
    del g.node[idx]
    for k, n in enumerate(new):
        g.node.insert(idx + k, n)
    g.initializer.remove(inits[table_name])
    return True


# ------------------------------------------------------------------------------------------------------------------
# Quantisation


def save_model(model: Any, dst: Path) -> Path:
    """Save ``model`` as ``dst`` (the graph) plus ``<dst>_data`` (every tensor over 1 KB).

    With the weights outside the protobuf, onnxruntime maps them instead of parsing and copying them: the peak
    RSS of loading SmolLM2's int8 graph fell from 465 to 272 MB (measured, 2026-12-03).
    """
    import onnx

    data = dst.with_name(dst.name + "_data")
    if data.exists():
        data.unlink()
    onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name,
              size_threshold=1024)
    data.chmod(0o644)
    return dst


def quantize_model(src: Path, dst: Path, name: str, calibration: Sequence[dict[str, np.ndarray]] | None = None,
                   log_fn: Callable[[str], None] = lambda m: None) -> Path:
    """Write format ``name`` of the fp32 ONNX file ``src`` to ``dst``, weights in ``<dst>_data`` (see
    :func:`save_model`)."""
    import onnx

    from pet.personal.export.onnx import quiet_loggers, untie_head

    spec = SPECS.get(name)
    if spec is None:
        raise QuantizeError(f"unknown quantisation {name!r} (choose {', '.join(SPECS)})")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if spec.bits is None:
        if src.resolve() != dst.resolve():
            save_model(onnx.load(str(src)), dst)
        return dst
    untied = dst.with_name(".untied.onnx")
    try:
        with quiet_loggers():
            untie_head(src, untied)
            model = onnx.load(str(untied))
            tied = _tied_head(model) if spec.shared_embedding else None
            q = _quantizer(model, spec, calibration)
            q.process()
            out = q.model.model
        if spec.shared_embedding:
            if tied is None or not share_embedding(out, *tied):
                log.warning("%s: the head is not the embedding transposed; the embedding stays fp32", src)
            else:
                log_fn("embedding shares the quantised head table (GatherBlockQuantized)")
        save_model(out, dst)
    except QuantizeError:
        raise
    except Exception as err:
        raise QuantizeError(f"{name} quantisation of {src} failed: {type(err).__name__}: {err}") from err
    finally:
        for p in untied.parent.glob(".untied.onnx*"):
            p.unlink()
    ops = {n.op_type for n in onnx.load(str(dst), load_external_data=False).graph.node}
    if "MatMulNBits" not in ops:
        raise QuantizeError(f"{name} quantisation of {src} produced no MatMulNBits node; this graph is not supported")
    return dst


def _quantizer(model: Any, spec: QuantSpec, calibration: Sequence[dict[str, np.ndarray]] | None) -> Any:
    from onnxruntime.quantization import matmul_nbits_quantizer as mq

    if spec.algo == "rtn":
        return mq.MatMulNBitsQuantizer(model, bits=spec.bits, block_size=spec.block_size, is_symmetric=True,
                                       accuracy_level=4)
    if spec.algo == "hqq":
        cfg = mq.HQQWeightOnlyQuantConfig(block_size=spec.block_size, bits=spec.bits)
        return mq.MatMulNBitsQuantizer(model, accuracy_level=4, algo_config=cfg)
    if spec.algo == "gptq":
        if not calibration:
            raise QuantizeError(f"{spec.name} needs calibration feeds (see calibration_feeds)")
        feeds = list(calibration)

        class Reader(mq.CalibrationDataReader):  # GPTQ iterates over a deep copy of the reader
            def __init__(self) -> None:
                self._it = iter(feeds)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self._it, None)

            def __iter__(self):
                return iter(feeds)

        cfg = mq.GPTQWeightOnlyQuantConfig(calibration_data_reader=Reader(), block_size=128, percdamp=0.01)
        return mq.MatMulNBitsQuantizer(model, bits=spec.bits, block_size=spec.block_size, accuracy_level=4,
                                       algo_config=cfg)
    raise QuantizeError(f"unknown algorithm {spec.algo!r} of {spec.name}")
