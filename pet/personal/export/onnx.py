"""ONNX export with KV cache (optimum ``text-generation-with-past``) and the hand-off to quantisation.

The quantisation formats (``none``, ``int8``, ``int4``, shared-embedding and HQQ/GPTQ variants) live in
:mod:`pet.personal.export.quantize`; :func:`quantize` here keeps the old entry point.

Why not ``quantize_dynamic``: it quantises activations per tensor at run time, and SmolLM2's activation
outliers do not survive that: held-out perplexity x1.63 (optimum graph) and x1.65 (compact graph with an fp32
embedding), against x1.004 for block-wise weight-only int8. optimum ties the head to the embedding through a
run-time ``Transpose``, which ``MatMulNBitsQuantizer`` skips; :func:`untie_head` first turns that ``Transpose``
into a constant so the head is quantised too.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from pet.personal.bundle.read import MODEL_FILE


class ExportError(RuntimeError):
    """The ONNX export or quantisation failed; the message says which step and why."""


def export_fp32(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Run optimum's exporter into ``out_dir``; returns the ``model.onnx`` path (external data beside it)."""
    from optimum.exporters.onnx import main_export

    out_dir = Path(out_dir)
    # The exporter prints tracer warnings by the hundred; keep the console readable.
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), quiet_loggers():
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                main_export(str(model_dir), output=str(out_dir), task="text-generation-with-past",
                            local_files_only=True, do_validation=False)
    except Exception as err:
        raise ExportError(f"optimum export of {model_dir} failed: {err}") from err
    path = out_dir / MODEL_FILE
    if not path.is_file():
        raise ExportError(f"optimum export wrote no {MODEL_FILE} into {out_dir}")
    return path


@contextlib.contextmanager
def quiet_loggers():
    """Silence the exporters' and quantizers' per-node logging inside the ``with`` block."""
    # The quantizers log every node at INFO (thousands of lines) and a pre-processing hint on the root logger.
    loggers = [logging.getLogger(n) for n in ("optimum", "transformers", "torch.onnx", "onnxruntime",
                                               "onnxruntime.quantization.matmul_nbits_quantizer")]
    loggers.append(logging.getLogger())
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, old, strict=True):
            lg.setLevel(lvl)


def quantize(src: Path, dst: Path, mode: str, calibration=None, log=lambda m: None) -> Path:
    """Write the ``mode`` format (see :data:`pet.personal.export.quantize.SPECS`) of ONNX file ``src`` to ``dst``."""
    from pet.personal.export.quantize import QuantizeError, quantize_model

    try:
        return quantize_model(src, dst, mode, calibration=calibration, log_fn=log)
    except QuantizeError as err:
        raise ExportError(str(err)) from err


def untie_head(src: Path, dst: Path) -> Path:
    """Replace every ``MatMul(x, Transpose(initializer))`` by ``MatMul(x, constant)`` (the tied LM head)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    drop = []
    for node in g.node:
        if node.op_type != "MatMul" or node.input[1] in inits:
            continue
        tr = producers.get(node.input[1])
        if tr is None or tr.op_type != "Transpose" or tr.input[0] not in inits:
            continue
        perm = next((list(a.ints) for a in tr.attribute if a.name == "perm"), None)
        w = numpy_helper.to_array(inits[tr.input[0]])
        wt = w.transpose(perm) if perm else w.T
        name = f"{tr.input[0]}_transposed_for_{node.name.strip('/').replace('/', '_')}"
        g.initializer.append(numpy_helper.from_array(wt.copy(), name))
        node.input[1] = name
        consumers[tr.output[0]] -= 1
        if consumers[tr.output[0]] == 0:
            drop.append(tr)
    for n in drop:
        g.node.remove(n)
    # Over 2 GB (untied copy of a big table) protobuf needs external data; small models stay one file.
    big = sum(i.ByteSize() for i in g.initializer) > 1_800_000_000
    onnx.save(model, str(dst), save_as_external_data=big, location=dst.name + "_data" if big else None)
    return dst
