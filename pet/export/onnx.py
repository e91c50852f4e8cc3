"""ONNX export with KV cache (optimum ``text-generation-with-past``) and weight quantisation.

- ``none``: the fp32 graph as exported.
- ``int8``: onnxruntime ``quantize_dynamic`` (int8 weights, per-channel, uint8 activations quantised at
  run time) of MatMul and Gather (the embedding table), which is what makes the file ~4x smaller.
- ``int4``: 4-bit block-wise weight-only ``MatMulNBits`` (onnxruntime's ``MatMulNBitsQuantizer``, symmetric,
  block 32, accuracy level 4 = int8 compute); the embedding stays fp32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from pathlib import Path

from pet.device.bundle import MODEL_FILE


class ExportError(RuntimeError):
    """The ONNX export or quantisation failed; the message says which step and why."""


def export_fp32(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Run optimum's exporter into ``out_dir``; returns the ``model.onnx`` path (external data beside it)."""
    from optimum.exporters.onnx import main_export

    out_dir = Path(out_dir)
    # The exporter prints tracer warnings by the hundred; keep the console readable.
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), _quiet_loggers():
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
def _quiet_loggers():
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


def quantize(src: Path, dst: Path, mode: str) -> Path:
    """Write the ``mode`` quantisation of ONNX file ``src`` to ``dst`` (``none`` copies the file)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "none":
        if src.resolve() != dst.resolve():
            shutil.copy2(src, dst)
            data = src.with_name(src.name + "_data")
            if data.exists():
                shutil.copy2(data, dst.with_name(dst.name + "_data"))
        return dst
    if mode == "int8":
        return _int8(src, dst)
    if mode == "int4":
        return _int4(src, dst)
    raise ExportError(f"unknown quantisation {mode!r} (choose none, int8 or int4)")


def _int8(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet_loggers():
            quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                             weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
    except Exception as err:
        raise ExportError(f"int8 dynamic quantisation of {src} failed: {err}") from err
    return dst


def _int4(src: Path, dst: Path, block_size: int = 32) -> Path:
    import onnx

    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as err:
        raise ExportError(f"int4 needs onnxruntime's MatMulNBitsQuantizer, which is unavailable: {err}") from err
    try:
        with _quiet_loggers():
            model = onnx.load(str(src))
            q = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True, accuracy_level=4)
            q.process()
            q.model.save_model_to_file(str(dst), use_external_data_format=False)
    except Exception as err:
        raise ExportError(f"int4 MatMulNBits quantisation of {src} failed: {err}") from err
    import onnx as _onnx

    ops = {n.op_type for n in _onnx.load(str(dst), load_external_data=False).graph.node}
    if "MatMulNBits" not in ops:
        raise ExportError(f"int4 quantisation of {src} produced no MatMulNBits node; this graph is not supported")
    return dst
