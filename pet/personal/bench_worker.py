"""One variant of the device benchmark, measured in its own process (``python -m pet.personal.bench_worker SPEC``).

A variant is a bundle run by a device runtime (``ort`` or ``genai``), or PyTorch fp32 of a bundle's source model.
Measured: load time, TTFT for 16/128/512-token prompts, decode tok/s over ``new_tokens`` steps on one thread
and on two, peak RSS (the one-thread run's, taken before the two-thread model loads), the greedy tokens of
four chat prompts (so runtimes of one bundle can be compared), and the figures the roofline needs: matrix
weights per token and a single-core fp32 GEMM rate measured in the same process. Prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PROMPT_LENGTHS = (16, 128, 512)
AGREEMENT_PROMPTS = ("What is the capital of France?", "Write a Python function that reverses a string.",
                     "Give me three tips for sleeping better.", "Explain what a hash function is in one paragraph.")


def _prompt_ids(encode: Any, n: int) -> list[int]:
    """Exactly ``n`` real-text token ids (stdlib docs, repeated if short)."""
    import pydoc

    text = pydoc.render_doc(json, renderer=pydoc.plaintext)
    ids = encode(text)
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB: ``VmHWM`` (reset at exec; ``ru_maxrss`` is not on
    Linux, so a worker would report its parent's peak when that was larger)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def gemm_gflops(m: int = 128, k: int = 576, n: int = 1536, repeats: int = 20) -> float:
    """Best single-thread fp32 GEMM rate (numpy/OpenBLAS with OMP_NUM_THREADS=1), GFLOP/s, at a prefill shape."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def matmul_weights(model_path: str | Path) -> int:
    """Weights multiplied per token (MatMul initializers and MatMulNBits K x N): prefill FLOPs = 2 x this x n."""
    import onnx
    from onnx import helper

    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name: i for i in m.graph.initializer}
    total = 0
    for node in m.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            total += int(np.prod(inits[node.input[1]].dims))
        elif node.op_type == "MatMulNBits":
            a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
            total += int(a["K"]) * int(a["N"])
    return total


def _summary(ttft: dict[int, float], steps: list[float], ttft_cpu: dict[int, float],
             steps_cpu: list[float]) -> dict[str, Any]:
    a, c = np.asarray(steps), np.asarray(steps_cpu)
    return {"ttft_s": {str(k): round(v, 4) for k, v in ttft.items()},
            "ttft_cpu_s": {str(k): round(v, 4) for k, v in ttft_cpu.items()},
            "decode_tok_s_cpu": round(float(1 / np.median(c)), 2),
            "decode_tok_s": round(float(1 / np.median(a)), 2), "token_ms_median": round(float(np.median(a)) * 1e3, 3),
            "token_ms_p95": round(float(np.percentile(a, 95)) * 1e3, 3), "decode_steps": len(steps)}


def _decode(m: Any, new_tokens: int, repeats: int) -> tuple[list[float], list[float]]:
    steps: list[float] = []
    steps_cpu: list[float] = []
    for _ in range(repeats):
        m.generate_ids(_prompt_ids(m.encode, 16), max_new_tokens=new_tokens, ignore_eos=True)
        steps += m.last_timings["steps"]
        steps_cpu += m.last_timings["steps_cpu"]
    return steps, steps_cpu


def worker_bundle(bundle: str, new_tokens: int, repeats: int, runtime: str = "ort",
                  threads: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Measure one bundle with one runtime (see the module docstring)."""
    from pet.personal.bench import bytes_read_per_token
    from pet.personal.runtime import load_model

    t = time.perf_counter()
    # A benchmark measures speed, not provenance: unsigned development bundles are accepted here.
    m = load_model(bundle, runtime=runtime, num_threads=threads[0], allow_unsigned=True)
    load_s = time.perf_counter() - t
    m.generate_ids(_prompt_ids(m.encode, 16), max_new_tokens=4, ignore_eos=True)  # warm-up
    ttft, ttft_cpu = {}, {}
    for n in PROMPT_LENGTHS:
        if n + 1 > m.max_context:  # a model with a short context: that prompt length is not measured
            continue
        ids = _prompt_ids(m.encode, n)
        wall, cpu = [], []
        for _ in range(repeats):
            m.generate_ids(ids, max_new_tokens=1, ignore_eos=True)
            wall.append(m.last_timings["ttft"])
            cpu.append(m.last_timings["ttft_cpu"])
        ttft[n], ttft_cpu[n] = min(wall), min(cpu)
    steps, steps_cpu = _decode(m, new_tokens, repeats)
    greedy = [m.generate(p, max_new_tokens=24).token_ids for p in AGREEMENT_PROMPTS]
    rss = peak_rss_mb()
    weights = m.info.model_path.stat().st_size + sum(
        (m.info.path / f).stat().st_size for f in m.info.files if f.startswith("model.onnx_data"))
    out = {"read_mb_per_token": round(bytes_read_per_token(m.info.model_path) / 1e6, 1),
           "kind": "onnxruntime", "runtime": runtime, "quantization": m.info.quantization, "layers": m.info.layers,
           "model_id": m.info.model_id, "bundle_mb": round(m.info.size_bytes / 1e6, 1),
           "weights_mb": round(weights / 1e6, 1), "load_s": round(load_s, 2), "peak_rss_mb": rss,
           "hidden_size": m.info.raw.get("hidden_size"), "matmul_weights": matmul_weights(m.info.model_path),
           "ppl_ratio": (m.info.parity or {}).get("ppl_ratio"),
           "greedy_token_agreement": (m.info.parity or {}).get("greedy_token_agreement"), "greedy_ids": greedy,
           **_summary(ttft, steps, ttft_cpu, steps_cpu)}
    del m
    for n_threads in threads[1:]:
        m2 = load_model(bundle, runtime=runtime, num_threads=n_threads, allow_unsigned=True)
        m2.generate_ids(_prompt_ids(m2.encode, 16), max_new_tokens=4, ignore_eos=True)
        s2, c2 = _decode(m2, new_tokens, repeats)
        out[f"decode_tok_s_{n_threads}t"] = round(float(1 / np.median(s2)), 2)
        out[f"decode_tok_s_cpu_{n_threads}t"] = round(float(1 / np.median(c2)) * n_threads, 2)
        del m2
    out["gemm_gflops"] = round(gemm_gflops(), 2)
    out["torch_imported"] = "torch" in sys.modules
    return out


def worker_torch(model_dir: str, new_tokens: int, repeats: int) -> dict[str, Any]:
    """PyTorch fp32 of ``model_dir`` with its own KV-cache loop, one thread (the baseline of older tables)."""
    import torch

    from pet.models.lm import CausalLM

    torch.set_num_threads(1)
    t = time.perf_counter()
    lm = CausalLM.load(model_dir, threads=1)
    load_s = time.perf_counter() - t

    def enc(text: str) -> list[int]:
        return lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    def run(ids: list[int], n_new: int) -> tuple[float, float, list[float], list[float]]:
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = lm.model(input_ids=torch.tensor([ids]), use_cache=True)
            tok = out.logits[0, -1].argmax()
            ttft, ttft_cpu = time.perf_counter() - t0, time.process_time() - c0
            past, steps, steps_cpu = out.past_key_values, [], []
            for _ in range(n_new - 1):
                ts, cs = time.perf_counter(), time.process_time()
                out = lm.model(input_ids=tok.view(1, 1), past_key_values=past, use_cache=True)
                past, tok = out.past_key_values, out.logits[0, -1].argmax()
                steps.append(time.perf_counter() - ts)
                steps_cpu.append(time.process_time() - cs)
        return ttft, ttft_cpu, steps, steps_cpu

    run(_prompt_ids(enc, 16), 4)
    ttft, ttft_cpu = {}, {}
    for n in PROMPT_LENGTHS:
        runs = [run(_prompt_ids(enc, n), 1) for _ in range(repeats)]
        ttft[n], ttft_cpu[n] = min(r[0] for r in runs), min(r[1] for r in runs)
    steps: list[float] = []
    steps_cpu: list[float] = []
    for _ in range(repeats):
        r = run(_prompt_ids(enc, 16), new_tokens)
        steps += r[2]
        steps_cpu += r[3]
    params = {id(p): p for p in lm.model.parameters()}.values()
    weights = sum(p.numel() * p.element_size() for p in params)
    embed = lm.model.get_input_embeddings().weight
    # Tied head: the table is read in full by the head every step, so nothing is subtracted.
    tied = embed is getattr(lm.model.get_output_embeddings(), "weight", None)
    read = weights if tied else weights - embed.numel() * embed.element_size()
    return {"read_mb_per_token": round(read / 1e6, 1), "runtime": "torch",
            "kind": "torch", "quantization": "fp32", "layers": lm.model.config.num_hidden_layers,
            "model_id": Path(model_dir).name, "bundle_mb": None, "weights_mb": round(weights / 1e6, 1),
            "load_s": round(load_s, 2), "peak_rss_mb": peak_rss_mb(), "gemm_gflops": round(gemm_gflops(), 2),
            **_summary(ttft, steps, ttft_cpu, steps_cpu)}


def main(spec_json: str) -> None:
    """Run the variant described by ``spec_json`` and print its result as one JSON line."""
    spec = json.loads(spec_json)
    if "torch" in spec:
        r = worker_torch(spec["torch"], spec["new_tokens"], spec["repeats"])
    else:
        r = worker_bundle(spec["bundle"], spec["new_tokens"], spec["repeats"], spec.get("runtime", "ort"),
                          tuple(spec.get("threads", (1, 2))))
    print(json.dumps(r))


if __name__ == "__main__":
    main(sys.argv[1])
