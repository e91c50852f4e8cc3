"""Device latency benchmark (``pet bench device`` and ``benchmarks/device_latency.py``).

Each variant (a bundle run by one device runtime, ``ort`` or ``genai``, or PyTorch fp32 of the bundle's source
model) runs in its own subprocess (:mod:`pet.personal.bench_worker`), so its peak RSS is its own. Per variant:
time to first token (TTFT) for 16/128/512-token prompts, decode tokens/s on one thread and on two, peak RSS,
bundle MB, perplexity ratio and greedy agreement vs fp32 (from the bundle's parity record), and for a second
runtime of one bundle its greedy agreement with the first. Two bounds are measured in the same run:

- memory bandwidth (numpy copy, one thread): decode tok/s <= bandwidth / weight bytes read per token;
  ``bw_ratio`` = measured decode tok/s / that bound;
- compute (numpy fp32 GEMM, one thread): TTFT(n) >= prefill FLOPs(n) / GEMM rate, with prefill FLOPs =
  2 n x (matrix weights) + 2 n^2 x hidden x layers (causal attention); ``ttft_roofline_ratio`` = TTFT / that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pet.machine import machine_info
from pet.personal.bench_worker import PROMPT_LENGTHS


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

    from pet.personal.bundle.read import read_bundle

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


def prefill_flops(r: dict[str, Any], n: int) -> float:
    """FLOPs of an ``n``-token prefill: the matrix products plus causal attention (scores and weighted sum)."""
    return 2.0 * n * r["matmul_weights"] + 2.0 * n * n * (r.get("hidden_size") or 0) * r["layers"]


def derive(out: dict[str, Any]) -> dict[str, Any]:
    """Bounds and ratios for every variant: bandwidth bound (wall and CPU time), TTFT roofline, speed-up vs
    the first variant, and a second runtime's greedy agreement with the bundle's first runtime."""
    bw, bw_cpu = out["bandwidth_gb_s"], out["bandwidth_cpu_gb_s"]
    for r in out["variants"].values():
        per_tok = r["read_mb_per_token"] * 1e6
        r["bw_bound_tok_s"] = round(bw * 1e9 / per_tok, 1)
        r["bw_ratio"] = round(r["decode_tok_s"] / r["bw_bound_tok_s"], 3)
        r["bw_bound_tok_s_cpu"] = round(bw_cpu * 1e9 / per_tok, 1)
        r["bw_ratio_cpu"] = round(r["decode_tok_s_cpu"] / r["bw_bound_tok_s_cpu"], 3)
        if r.get("matmul_weights") and r.get("gemm_gflops"):
            roof = {str(n): prefill_flops(r, n) / (r["gemm_gflops"] * 1e9) for n in PROMPT_LENGTHS}
            r["ttft_roofline_s"] = {k: float(f"{v:.4g}") for k, v in roof.items()}
            r["ttft_roofline_ratio"] = {k: round(v / roof[k], 2) for k, v in r["ttft_s"].items()}
    # Speed-ups are relative to PyTorch fp32 when it was measured (JSON files are key-sorted on disk).
    rows = list(out["variants"].values())
    first = next((r for r in rows if r.get("kind") == "torch"), rows[0])
    for r in out["variants"].values():
        r["speedup_vs_first"] = round(r["decode_tok_s"] / first["decode_tok_s"], 2)
        r["speedup_vs_first_cpu"] = round(r["decode_tok_s_cpu"] / first["decode_tok_s_cpu"], 2)
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        if not r.get("greedy_ids"):
            continue
        ref = seen.setdefault(r["bundle"], r)
        if ref is not r:
            pairs = [(a, b) for x, y in zip(ref["greedy_ids"], r["greedy_ids"], strict=True)
                     for a, b in zip(x, y, strict=False)]
            r["agreement_vs_" + ref["runtime"]] = round(sum(a == b for a, b in pairs) / max(len(pairs), 1), 3)
    return out


def _run_variant(spec: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "pet.personal.bench_worker", json.dumps(spec)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark of {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    """nproc, CPU model and its vector extensions, Python / onnxruntime / onnxruntime-genai versions, load."""
    flags: set[str] = set()
    try:
        flags = set(next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                         if ln.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")
    vector = [f for f in wanted if f in flags]
    try:
        import onnxruntime_genai

        genai = onnxruntime_genai.__version__
    except ImportError:
        genai = None
    return machine_info(threads=1, onnxruntime=__import__("onnxruntime").__version__, onnxruntime_genai=genai,
                        vector_extensions=vector, load_avg=[round(x, 2) for x in os.getloadavg()])


def run_device_bench(bundles: list[str], compare_torch: bool = False, new_tokens: int = 64, repeats: int = 2,
                     json_out: str | None = None, plot_out: str | None = None, labels: list[str] | None = None,
                     runtimes: list[str] | None = None, threads: tuple[int, ...] = (1, 2),
                     log: Any = print) -> dict[str, Any]:
    """Benchmark every bundle with every runtime in ``runtimes`` (default ``ort``; a runtime a bundle cannot run
    is skipped), and PyTorch fp32 of the first bundle's source; print a table, save JSON/PNG."""
    from pet.personal.bundle.read import GENAI_CONFIG_FILE, read_bundle

    runtimes = runtimes or ["ort"]
    specs: list[tuple[str, dict[str, Any]]] = []
    if compare_torch:
        src = read_bundle(bundles[0], verify=False).raw.get("source")
        if not src or not Path(src).is_dir():
            raise FileNotFoundError(f"the source model {src!r} of {bundles[0]} is not on this machine")
        specs.append((f"torch-fp32:{Path(src).name}", {"torch": src}))
    for i, b in enumerate(bundles):
        info = read_bundle(b, verify=False)
        base = labels[i] if labels else f"{info.quantization}:{info.model_id}"
        for rt in runtimes:
            if rt == "genai" and GENAI_CONFIG_FILE not in info.files:
                log(f"skipping genai for {b}: the bundle has no {GENAI_CONFIG_FILE}")
                continue
            name = f"{rt} {base}"
            if any(name == n for n, _ in specs):  # two bundles of one model and quantisation: name them apart
                name = f"{name} ({Path(b).name})"
            specs.append((name, {"bundle": str(b), "runtime": rt, "threads": list(threads)}))
    bw, bw_cpu = measure_bandwidth()
    log(f"memory bandwidth (numpy copy, 1 thread): {bw:.1f} GB/s wall, {bw_cpu:.1f} GB/s by CPU time")
    results = {}
    before = machine()
    for k, (name, spec) in enumerate(specs):
        log(f"[{k + 1}/{len(specs)}] benchmarking {name} ...")
        results[name] = {**_run_variant({**spec, "new_tokens": new_tokens, "repeats": repeats}),
                         "bundle": spec.get("bundle") or spec.get("torch"),
                         "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    after = machine()
    out = derive({"machine": before, "load_avg_1m_after": after["load_avg_1m"],
                  "bandwidth_gb_s": round(bw, 2), "bandwidth_cpu_gb_s": round(bw_cpu, 2),
                  "new_tokens": new_tokens, "repeats": repeats, "threads": list(threads),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "variants": results})
    print_table(out)
    if json_out:
        from pet.io import atomic_write_json

        atomic_write_json(json_out, out)
    if plot_out:
        plot(out, plot_out)
    return out


def print_table(out: dict[str, Any]) -> None:
    """The human-readable table (wall-clock numbers; decode speed also from process CPU time)."""
    m = out["machine"]
    print(f"machine: {m['nproc']} cores, {m['cpu']} ({', '.join(m.get('vector_extensions') or [])}), load "
          f"{m['load_avg_1m']} -> {out.get('load_avg_1m_after')}; bandwidth {out['bandwidth_gb_s']} GB/s wall, "
          f"{out.get('bandwidth_cpu_gb_s')} GB/s by CPU time")
    print(f"{'variant':<34} {'MB':>6} {'tok/s':>6} {'cpu':>6} {'2 thr':>6} {'TTFT16':>7} {'TTFT128':>8} "
          f"{'TTFT512':>8} {'x roof128':>9} {'RSS MB':>7} {'bound':>6} {'ratio':>6} {'ppl x':>6} {'agree':>6}")
    for name, r in out["variants"].items():
        t = {str(n): "-" for n in PROMPT_LENGTHS} | {k: f"{v * 1e3:.0f}ms" for k, v in r["ttft_s"].items()}
        ppl = f"{r['ppl_ratio']:.3f}" if r.get("ppl_ratio") else "-"
        agree = r.get("agreement_vs_ort", r.get("greedy_token_agreement"))
        roof = (r.get("ttft_roofline_ratio") or {}).get("128")
        mb = r.get("bundle_mb") or r["weights_mb"]
        print(f"{name:<34} {mb:>6.1f} {r['decode_tok_s']:>6.1f} {r['decode_tok_s_cpu']:>6.1f} "
              f"{r.get('decode_tok_s_2t', float('nan')):>6.1f} {t['16']:>7} {t['128']:>8} {t['512']:>8} "
              f"{roof if roof is not None else '-':>9} {r['peak_rss_mb']:>7.0f} {r['bw_bound_tok_s']:>6.0f} "
              f"{r['bw_ratio']:>6.2f} {ppl:>6} {agree if agree is not None else '-':>6}")


def plot(out: dict[str, Any], path: str) -> None:
    """Three panels: decode tok/s (1 and 2 threads, bandwidth bound, 60 tok/s goal), TTFT against the compute
    roofline per prompt length, and bundle MB / peak RSS against their goals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out["variants"])
    v = out["variants"]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(19, 5.6))
    x = np.arange(len(names))
    a1.bar(x - 0.2, [v[n]["decode_tok_s"] for n in names], 0.4, color="tab:blue", label="1 thread")
    a1.bar(x + 0.2, [v[n].get("decode_tok_s_2t", np.nan) for n in names], 0.4, color="tab:cyan", label="2 threads")
    a1.scatter(x - 0.2, [v[n]["bw_bound_tok_s"] for n in names], color="tab:red", marker="_", s=400,
               label="bandwidth bound (1 thread)")
    a1.axhline(60, color="gray", ls="--", lw=1, label="goal 60 tok/s")
    a1.set_ylabel("decode tokens / s")
    a1.set_title("decode speed")
    w = 0.8 / len(PROMPT_LENGTHS)
    for i, n in enumerate(PROMPT_LENGTHS):
        ms = [v[k]["ttft_s"].get(str(n), np.nan) * 1e3 for k in names]
        a2.bar(x + (i - 1) * w, ms, w, label=f"{n}-token prompt")
        roof = [(v[k].get("ttft_roofline_s") or {}).get(str(n), np.nan) * 1e3 for k in names]
        a2.scatter(x + (i - 1) * w, roof, color="black", marker="_", s=120,
                   label="compute roofline" if i == 0 else None)
    a2.set_ylabel("time to first token (ms)")
    a2.set_yscale("log")
    a2.set_title("TTFT vs one core's GEMM roofline")
    a3.bar(x - 0.2, [v[n].get("bundle_mb") or v[n]["weights_mb"] for n in names], 0.4, color="tab:olive",
           label="bundle MB")
    a3.bar(x + 0.2, [v[n]["peak_rss_mb"] for n in names], 0.4, color="tab:purple", label="peak RSS MB (1 thread)")
    a3.axhline(150, color="tab:olive", ls="--", lw=1, label="goal: bundle 150 MB")
    a3.axhline(500, color="tab:purple", ls="--", lw=1, label="goal: RSS 500 MB")
    a3.set_title("size and memory")
    for ax in (a1, a2, a3):
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    m = out["machine"]
    fig.suptitle(f"device P, {m['cpu']} ({', '.join(m.get('vector_extensions') or [])}; {m['nproc']} cores, load "
                 f"{m['load_avg_1m']}), {out['created']}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
