"""Device latency benchmark (``pet bench device`` and ``benchmarks/device_latency.py``).

Each variant (a bundle, or PyTorch fp32 of the bundle's source model) runs in its own subprocess with one
thread, so its peak RSS is its own. Per variant: time to first token (TTFT) for 16/128/512-token prompts,
decode tokens/s over ``new_tokens`` steps (median and p95 per-token latency), peak RSS and model MB. The
memory-bandwidth bound is measured in the same run (numpy copy, one thread): tok/s <= bandwidth / bytes
of weights read per token; ``bw_ratio`` = measured decode tok/s / that bound.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pet.machine import machine_info

PROMPT_LENGTHS = (16, 128, 512)


def _prompt_ids(encode: Any, n: int) -> list[int]:
    """Exactly ``n`` real-text token ids (stdlib docs, repeated if short)."""
    import pydoc

    text = pydoc.render_doc(json, renderer=pydoc.plaintext)
    ids = encode(text)
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def measure_bandwidth(mb: int = 256, repeats: int = 5) -> tuple[float, float]:
    """Best single-thread copy bandwidth in GB/s (bytes read + written per second), by wall and by CPU time."""
    src = np.ones(mb * (1 << 20) // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best, best_cpu = 0.0, 0.0
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        np.copyto(dst, src)
        best = max(best, 2 * src.nbytes / (time.perf_counter() - t) / 1e9)
        best_cpu = max(best_cpu, 2 * src.nbytes / max(time.process_time() - c, 1e-6) / 1e9)
    return best, best_cpu


def bytes_read_per_token(model_path: str | Path) -> int:
    """Weight bytes a decode step reads: the ONNX file minus embedding tables (a Gather reads one row)."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name: i for i in m.graph.initializer}
    size = Path(model_path).stat().st_size
    data = Path(str(model_path) + "_data")
    size += data.stat().st_size if data.exists() else 0
    for n in m.graph.node:
        if n.op_type == "Gather" and n.input[0] in inits:
            t = inits[n.input[0]]
            elems = int(np.prod(t.dims)) if t.dims else 1
            if elems >= 1 << 20:
                size -= elems * 4  # fp32 tables (quantised tables would be smaller; none are quantised here)
    return size


def profile_ops(bundle: str | Path, steps: int = 50, past_len: int = 20) -> dict[str, Any]:
    """Per-operator kernel time of one decode step (onnxruntime profiler, one thread, ``steps`` steps).

    Returns ``{"ops": {op: ms per step}, "nodes": {op: count}, "top": [(node, ms per step), ...]}``: the
    numbers behind "where the time goes" in docs/device.md.
    """
    import onnxruntime as ort

    from pet.device.bundle import read_bundle

    info = read_bundle(bundle, verify=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(info.model_path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    past = np.zeros((1, info.num_kv_heads, past_len, info.head_dim), dtype=np.float32)
    feed: dict[str, Any] = {n: past for n in names if n.startswith("past_key_values.")}
    feed["input_ids"] = np.array([[5]], dtype=np.int64)
    feed["attention_mask"] = np.ones((1, past_len + 1), dtype=np.int64)
    if "position_ids" in names:
        feed["position_ids"] = np.array([[past_len]], dtype=np.int64)
    for _ in range(steps):
        sess.run(None, feed)
    trace = Path(sess.end_profiling())
    try:
        events = json.loads(trace.read_text())
    finally:
        trace.unlink()
    ops: dict[str, float] = {}
    nodes: dict[str, float] = {}
    count: dict[str, int] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op = e["args"]["op_name"]
        ops[op] = ops.get(op, 0.0) + e["dur"] / 1e3 / steps
        nodes[e["name"]] = nodes.get(e["name"], 0.0) + e["dur"] / 1e3 / steps
        count[op] = count.get(op, 0) + 1
    return {"ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
            "nodes": {op: c // steps for op, c in count.items()},
            "top": sorted(nodes.items(), key=lambda kv: -kv[1])[:8]}


def derive(out: dict[str, Any]) -> dict[str, Any]:
    """Bandwidth bound and ratios for every variant (wall and CPU-time versions), speed-up vs the first."""
    bw, bw_cpu = out["bandwidth_gb_s"], out["bandwidth_cpu_gb_s"]
    for r in out["variants"].values():
        per_tok = r["read_mb_per_token"] * 1e6
        r["bw_bound_tok_s"] = round(bw * 1e9 / per_tok, 1)
        r["bw_ratio"] = round(r["decode_tok_s"] / r["bw_bound_tok_s"], 3)
        r["bw_bound_tok_s_cpu"] = round(bw_cpu * 1e9 / per_tok, 1)
        r["bw_ratio_cpu"] = round(r["decode_tok_s_cpu"] / r["bw_bound_tok_s_cpu"], 3)
    # Speed-ups are relative to PyTorch fp32 when it was measured (JSON files are key-sorted on disk).
    rows = list(out["variants"].values())
    first = next((r for r in rows if r.get("kind") == "torch"), rows[0])
    for r in out["variants"].values():
        r["speedup_vs_first"] = round(r["decode_tok_s"] / first["decode_tok_s"], 2)
        r["speedup_vs_first_cpu"] = round(r["decode_tok_s_cpu"] / first["decode_tok_s_cpu"], 2)
    return out


def _summary(ttft: dict[int, float], steps: list[float], ttft_cpu: dict[int, float],
             steps_cpu: list[float]) -> dict[str, Any]:
    a, c = np.asarray(steps), np.asarray(steps_cpu)
    return {"ttft_s": {str(k): round(v, 4) for k, v in ttft.items()},
            "ttft_cpu_s": {str(k): round(v, 4) for k, v in ttft_cpu.items()},
            "decode_tok_s_cpu": round(float(1 / np.median(c)), 2),
            "decode_tok_s": round(float(1 / np.median(a)), 2), "token_ms_median": round(float(np.median(a)) * 1e3, 3),
            "token_ms_p95": round(float(np.percentile(a, 95)) * 1e3, 3), "decode_steps": len(steps)}


def _worker_bundle(bundle: str, new_tokens: int, repeats: int) -> dict[str, Any]:
    from pet.device.runtime import DeviceModel

    t = time.perf_counter()
    m = DeviceModel.load(bundle, num_threads=1)
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
    steps: list[float] = []
    steps_cpu: list[float] = []
    for _ in range(repeats):
        m.generate_ids(_prompt_ids(m.encode, 16), max_new_tokens=new_tokens, ignore_eos=True)
        steps += m.last_timings["steps"]
        steps_cpu += m.last_timings["steps_cpu"]
    weights = m.info.model_path.stat().st_size + sum(
        (m.info.path / f).stat().st_size for f in m.info.files if f.startswith("model.onnx_data"))
    return {"read_mb_per_token": round(bytes_read_per_token(m.info.model_path) / 1e6, 1),
            "kind": "onnxruntime", "quantization": m.info.quantization, "layers": m.info.layers,
            "model_id": m.info.model_id, "bundle_mb": round(m.info.size_bytes / 1e6, 1),
            "weights_mb": round(weights / 1e6, 1), "load_s": round(load_s, 2),
            "ppl_ratio": (m.info.parity or {}).get("ppl_ratio"),
            "greedy_token_agreement": (m.info.parity or {}).get("greedy_token_agreement"),
            **_summary(ttft, steps, ttft_cpu, steps_cpu), "torch_imported": "torch" in sys.modules}


def _worker_torch(model_dir: str, new_tokens: int, repeats: int) -> dict[str, Any]:
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
    return {"read_mb_per_token": round(read / 1e6, 1),
            "kind": "torch", "quantization": "fp32", "layers": lm.model.config.num_hidden_layers,
            "model_id": Path(model_dir).name, "bundle_mb": None, "weights_mb": round(weights / 1e6, 1),
            "load_s": round(load_s, 2), **_summary(ttft, steps, ttft_cpu, steps_cpu)}


def _run_variant(spec: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "pet.device.bench", json.dumps(spec)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark of {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    """nproc, CPU model, Python and onnxruntime versions, load average."""
    return machine_info(threads=1, onnxruntime=__import__("onnxruntime").__version__)


def run_device_bench(bundles: list[str], compare_torch: bool = False, new_tokens: int = 64, repeats: int = 2,
                     json_out: str | None = None, plot_out: str | None = None, labels: list[str] | None = None,
                     log: Any = print) -> dict[str, Any]:
    """Benchmark every bundle (and PyTorch fp32 of the first bundle's source); print a table, save JSON/PNG."""
    from pet.device.bundle import read_bundle

    specs: list[tuple[str, dict[str, Any]]] = []
    if compare_torch:
        src = read_bundle(bundles[0], verify=False).raw.get("source")
        if not src or not Path(src).is_dir():
            raise FileNotFoundError(f"the source model {src!r} of {bundles[0]} is not on this machine")
        specs.append((f"torch-fp32:{Path(src).name}", {"torch": src}))
    for i, b in enumerate(bundles):
        info = read_bundle(b, verify=False)
        name = labels[i] if labels else f"ort-{info.quantization}:{info.model_id}"
        if any(name == n for n, _ in specs):  # two bundles of one model and quantisation: name them apart
            name = f"{name} ({Path(b).name})"
        specs.append((name, {"bundle": str(b)}))
    bw, bw_cpu = measure_bandwidth()
    log(f"memory bandwidth (numpy copy, 1 thread): {bw:.1f} GB/s wall, {bw_cpu:.1f} GB/s by CPU time")
    results = {}
    for name, spec in specs:
        log(f"benchmarking {name} ...")
        results[name] = _run_variant({**spec, "new_tokens": new_tokens, "repeats": repeats})
    out = derive({"machine": machine(), "bandwidth_gb_s": round(bw, 2), "bandwidth_cpu_gb_s": round(bw_cpu, 2),
                  "new_tokens": new_tokens, "repeats": repeats,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "variants": results})
    print_table(out)
    if json_out:
        from pet.io import atomic_write_json

        atomic_write_json(json_out, out)
    if plot_out:
        plot(out, plot_out)
    return out


def print_table(out: dict[str, Any]) -> None:
    """The human-readable table (wall-clock numbers, and decode speed from process CPU time)."""
    m = out["machine"]
    print(f"machine: {m['nproc']} cores, {m['cpu']}, 1 thread, load {m['load_avg_1m']}; "
          f"bandwidth {out['bandwidth_gb_s']} GB/s wall, {out.get('bandwidth_cpu_gb_s')} GB/s by CPU time")
    print(f"{'variant':<34} {'MB':>7} {'TTFT16':>7} {'TTFT128':>8} {'TTFT512':>8} {'tok/s':>7} {'cpu tok/s':>9} "
          f"{'p95 ms':>7} {'RSS MB':>7} {'read MB':>7} {'bound':>6} {'ratio':>6} {'ratio cpu':>9} {'ppl x':>6}")
    for name, r in out["variants"].items():
        t = {str(n): "-" for n in PROMPT_LENGTHS} | {k: f"{v * 1e3:.0f}ms" for k, v in r["ttft_s"].items()}
        ppl = f"{r['ppl_ratio']:.3f}" if r.get("ppl_ratio") else "-"
        print(f"{name:<34} {r['weights_mb']:>7.1f} {t['16']:>7} {t['128']:>8} {t['512']:>8} {r['decode_tok_s']:>7.1f} "
              f"{r['decode_tok_s_cpu']:>9.1f} {r['token_ms_p95']:>7.1f} {r['peak_rss_mb']:>7.0f} "
              f"{r['read_mb_per_token']:>7.1f} {r['bw_bound_tok_s']:>6.0f} {r['bw_ratio']:>6.2f} "
              f"{r['bw_ratio_cpu']:>9.2f} {ppl:>6}")


def plot(out: dict[str, Any], path: str) -> None:
    """Bar charts: decode tok/s (with the bandwidth bound) and TTFT per prompt length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out["variants"])
    v = out["variants"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8))
    x = np.arange(len(names))
    a1.bar(x - 0.2, [v[n]["decode_tok_s"] for n in names], 0.4, color="tab:blue", label="decode tok/s (wall)")
    a1.bar(x + 0.2, [v[n]["decode_tok_s_cpu"] for n in names], 0.4, color="tab:green",
           label="decode tok/s (CPU time)")
    a1.scatter(x + 0.2, [v[n]["bw_bound_tok_s_cpu"] for n in names], color="tab:red", marker="_", s=400,
               label="memory-bandwidth bound (CPU time)")
    a1.axhline(60, color="gray", ls="--", lw=1, label="goal 60 tok/s")
    a1.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    a1.set_ylabel("tokens / s (1 thread)")
    a1.set_yscale("log")
    a1.legend(fontsize=8)
    a1.set_title("decode speed")
    w = 0.8 / len(PROMPT_LENGTHS)
    for i, n in enumerate(PROMPT_LENGTHS):
        ms = [v[k]["ttft_s"].get(str(n), np.nan) * 1e3 for k in names]
        a2.bar(x + (i - 1) * w, ms, w, label=f"{n}-token prompt")
    a2.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    a2.set_ylabel("time to first token (ms)")
    a2.set_yscale("log")
    a2.legend(fontsize=8)
    a2.set_title("TTFT")
    m = out["machine"]
    fig.suptitle(f"device latency, {m['cpu']} ({m['nproc']} cores, shared), 1 thread, {out['created']}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    if "torch" in spec:
        r = _worker_torch(spec["torch"], spec["new_tokens"], spec["repeats"])
    else:
        r = _worker_bundle(spec["bundle"], spec["new_tokens"], spec["repeats"])
    r["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(r))


if __name__ == "__main__":
    _worker_main(sys.argv[1])
