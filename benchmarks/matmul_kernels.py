"""Decode-step kernel ceiling: how fast onnxruntime's CPU weight kernels stream a decode step's weights.

    python benchmarks/matmul_kernels.py [--layers 10] [--repeats 60] [--threads 1]

Builds the matrix products of a SmolLM2-135M decode step (one token, M = 1) with random weights: one graph of
``--layers`` decode layers (per layer q/o 576x576, k/v 576x192, gate/up 576x1536, down 1536x576; ~35 MB fp32
for 10 layers, so nothing stays in cache) and one of the LM head (576x49152), and times one pass of each per
weight format on one thread, side by side, in interleaved rounds:

- fp32 ``MatMul``;
- ``MatMulNBits`` 8-bit and 4-bit (block 32 and 128, accuracy level 4 = int8 compute, what `pet export` uses);
- ``MatMulInteger`` after ``quantize_dynamic`` (per-channel int8 weights, dynamic int8 activations).

The 135M model's products per token take 30/layers x the layers pass + the head pass: the reciprocal is the
decode-speed ceiling of that format with these kernels, whatever the graph around the products does. Also
reported: weight bytes streamed per second, as a share of the machine's copy bandwidth. Writes
benchmarks/results/matmul_kernels.json and .png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, pyplot, save_results  # noqa: E402
from pet.machine import machine_info  # noqa: E402
from pet.personal.bench import measure_bandwidth  # noqa: E402

HIDDEN, KV, INTER, VOCAB, LAYERS_135M = 576, 192, 1536, 49152, 30
LAYER_SHAPES = [(HIDDEN, HIDDEN), (HIDDEN, KV), (HIDDEN, KV), (HIDDEN, HIDDEN),
                (HIDDEN, INTER), (HIDDEN, INTER), (INTER, HIDDEN)]


def params_per_token() -> int:
    """Weights one decode step of SmolLM2-135M multiplies by: 30 layers plus the (tied) LM head."""
    return LAYERS_135M * sum(k * n for k, n in LAYER_SHAPES) + HIDDEN * VOCAB


def build_fp32(path: Path, layers: int, head: bool = False, seed: int = 0) -> int:
    """A graph of ``layers`` decode layers' products (or, with ``head``, the LM head's 576 x 49152 product)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, x, params = [], [], "x", 0
    if head:
        inits.append(numpy_helper.from_array((rng.standard_normal((HIDDEN, VOCAB)) * 0.03).astype(np.float32), "wh"))
        nodes.append(helper.make_node("MatMul", ["x", "wh"], ["logits"]))
        params, layers = HIDDEN * VOCAB, 0
    for i in range(layers):
        inter = x
        for j, (k, n) in enumerate(LAYER_SHAPES):
            w = (rng.standard_normal((k, n)) * 0.03).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"w{i}_{j}"))
            params += k * n
            out = f"y{i}_{j}"
            # q, k, v, gate, up read the running 576-vector; down reads up's output; o and down replace it
            nodes.append(helper.make_node("MatMul", [inter if k == INTER else x, f"w{i}_{j}"], [out]))
            if n == INTER:
                inter = out
            elif n == HIDDEN:
                x = out
    graph = helper.make_graph(nodes, "decode_products",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, HIDDEN])],
                              [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in nodes],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(path))
    return params


def variants(fp32: Path, folder: Path, tag: str) -> dict[str, Path]:
    """Write every quantised variant of ``fp32`` next to it; name -> file."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger().setLevel(logging.ERROR)
    out = {"fp32 MatMul": fp32}
    for bits in (8, 4):
        for block in (32, 128):
            q = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=bits, block_size=block, is_symmetric=True,
                                     accuracy_level=4)
            q.process()
            p = folder / f"{tag}_nbits{bits}_b{block}.onnx"
            q.model.save_model_to_file(str(p), use_external_data_format=False)
            out[f"MatMulNBits int{bits} block {block}"] = p
    p = folder / f"{tag}_dynamic_int8.onnx"
    quantize_dynamic(str(fp32), str(p), per_channel=True, weight_type=QuantType.QInt8)
    model = onnx.load(str(p))
    model.ir_version = min(model.ir_version, 9)  # this onnxruntime reads IR <= 10; the quantiser writes newer
    onnx.save(model, str(p))
    out["MatMulInteger int8 (dynamic)"] = p
    return out


def weight_bytes(path: Path) -> int:
    """Bytes of the initialisers a pass reads (weights, scales, zero points)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return sum(numpy_helper.to_array(i).nbytes for i in m.graph.initializer if np.prod(i.dims) > 64)


def time_pass(path: Path, threads: int, repeats: int) -> tuple[float, float]:
    """Median and p95 seconds of one pass over all the products, on ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(1).standard_normal((1, HIDDEN)).astype(np.float32)}
    for _ in range(5):
        sess.run(None, feed)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), float(np.percentile(ts, 95))


def run(layers: int, repeats: int, threads: int, rounds: int = 3) -> dict:
    bw, _ = measure_bandwidth()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        params = build_fp32(folder / "layers.onnx", layers)
        build_fp32(folder / "head.onnx", 0, head=True)
        files = {"layers": variants(folder / "layers.onnx", folder, "layers"),
                 "head": variants(folder / "head.onnx", folder, "head")}
        names = list(files["layers"])
        sizes = {part: {n: weight_bytes(p) for n, p in fs.items()} for part, fs in files.items()}
        times: dict[str, dict[str, list[float]]] = {part: {n: [] for n in names} for part in files}
        for r in range(rounds):  # interleaved rounds: a load spike hits every format alike
            for n in names:
                for part in files:
                    med, _ = time_pass(files[part][n], threads, repeats)
                    times[part][n].append(med)
                print(f"round {r + 1}/{rounds} {n:<30} layers {times['layers'][n][-1] * 1e3:6.2f} ms, "
                      f"head {times['head'][n][-1] * 1e3:6.2f} ms", flush=True)
    rows = {}
    for n in names:
        t_layers, t_head = (float(np.median(times[part][n])) for part in ("layers", "head"))
        step = t_layers * LAYERS_135M / layers + t_head  # the 135M model's products: 30 layers + head
        step_bytes = sizes["layers"][n] * LAYERS_135M / layers + sizes["head"][n]
        rows[n] = {"layers_mb": round(sizes["layers"][n] / 1e6, 2), "layers_ms": round(t_layers * 1e3, 3),
                   "head_mb": round(sizes["head"][n] / 1e6, 2), "head_ms": round(t_head * 1e3, 3),
                   "layers_gb_s": round(sizes["layers"][n] / t_layers / 1e9, 2),
                   "head_gb_s": round(sizes["head"][n] / t_head / 1e9, 2),
                   "step_mb_135m": round(step_bytes / 1e6, 1), "step_ms_135m": round(step * 1e3, 2),
                   "gb_s": round(step_bytes / step / 1e9, 2),
                   "share_of_copy_bw": round(step_bytes / step / (bw * 1e9), 3),
                   "ceiling_tok_s_135m": round(1 / step, 1)}
    base = rows["fp32 MatMul"]["step_ms_135m"]
    for r in rows.values():
        r["speedup_vs_fp32"] = round(base / r["step_ms_135m"], 2)
    return {"machine": machine_info(threads=threads, copy_bandwidth_gb_s=round(bw, 2)),
            "layers": layers, "params_in_layers_pass": params, "params_per_token_135m": params_per_token(),
            "repeats": repeats, "rounds": rounds, "rows": rows}


def print_table(out: dict) -> None:
    m = out["machine"]
    print(f"\nmachine: {m['nproc']} cores, {m['cpu']}, {m['threads']} thread(s), load {m['load_avg_1m']}, "
          f"copy bandwidth {m['copy_bandwidth_gb_s']} GB/s; passes: {out['layers']} decode layers "
          f"({out['params_in_layers_pass'] / 1e6:.1f}M weights) and the LM head (28.3M); 135M step = "
          f"{30 // out['layers']} x layers + head")
    print(f"{'format':<30} {'layers ms':>9} {'GB/s':>5} {'head ms':>8} {'GB/s':>5} {'step MB':>8} {'step ms':>8} "
          f"{'bw%':>4} {'x fp32':>6} {'ceiling tok/s':>13}")
    for n, r in out["rows"].items():
        print(f"{n:<30} {r['layers_ms']:>9.2f} {r['layers_gb_s']:>5.2f} {r['head_ms']:>8.2f} {r['head_gb_s']:>5.2f} "
              f"{r['step_mb_135m']:>8.1f} {r['step_ms_135m']:>8.2f} {r['share_of_copy_bw'] * 100:>3.0f}% "
              f"{r['speedup_vs_fp32']:>6.2f} {r['ceiling_tok_s_135m']:>13.1f}")


def plot(out: dict, path: Path) -> None:
    plt = pyplot()
    names = list(out["rows"])
    ceil = [out["rows"][n]["ceiling_tok_s_135m"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.barh(names, ceil, color="#4c72b0")
    ax.axvline(60, color="#c44e52", ls="--", label="goal: 60 tok/s")
    ax.set_xlabel("decode ceiling of SmolLM2-135M from kernel rate alone (tok/s, 1 thread)")
    ax.set_title(f"onnxruntime CPU weight kernels, M = 1 ({out['machine']['cpu']})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "matmul_kernels.json"))
    args = ap.parse_args()
    out = run(args.layers, args.repeats, args.threads)
    print_table(out)
    save_results(Path(args.out).with_suffix(""), out, plot=lambda path: plot(out, path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
