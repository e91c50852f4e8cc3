"""What encryption costs per request, for each HPKE suite, next to the latency of a real request.

    python benchmarks/crypto_overhead.py [--iterations 300] [--generate-runs 7] [--max-new-tokens 16] [--no-model]

For each suite of :mod:`pet.security.suites` one request round trip is timed stage by stage, on one thread:
device seal (fresh reply key + HPKE encrypt), gateway open (parse, replay check, HPKE decrypt), reply seal
(HPKE encrypt to the reply key) and device open. The payload is a 600-character chat prompt and the response a
gateway-shaped answer of 16 tokens. In the same run the real SmolLM2-135M-Instruct generates 16 new tokens
(torch, 1 thread, greedy) several times; the ratio median crypto cost / median generate latency is the overhead
(goal: below 1 %). Writes ``benchmarks/results/crypto_overhead.json``, ``.md`` (the table) and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, pyplot, save_results  # noqa: E402
from pet.machine import machine_info  # noqa: E402
from pet.security.envelope import DeviceCrypto  # noqa: E402
from pet.security.gateway import GatewayCrypto  # noqa: E402
from pet.security.keys import KeyRing  # noqa: E402
from pet.security.suites import SUITES  # noqa: E402

STAGES = ("device_seal", "gateway_open", "reply_seal", "device_open")
PROMPT = ("I keep a small vegetable garden on my balcony and the tomato leaves have started to curl and turn "
          "yellow at the edges. I water them every morning, they get about six hours of sun, and I used a "
          "general purpose fertiliser two weeks ago. What could be wrong, and what should I change first? "
          "Please keep the answer short and practical, and tell me which sign would mean it is a disease "
          "rather than a watering problem, because I do not want to lose the whole plant this season.")


def fake_response(text: str) -> dict:
    """A response shaped like the gateway's /v1/generate answer."""
    return {"request_id": "x" * 32, "text": text, "tier": "t", "domain": None, "fallback": False,
            "fallback_reason": None, "escalation": ["t"],
            "signals": {"mean_logprob": -0.71, "min_token_prob": 0.12, "mean_entropy": 1.9},
            "usage": {"prompt_tokens": 131, "completion_tokens": 16, "seconds": 0.61}, "latency_ms": 640.2}


def time_suite(suite: str, iterations: int, response_text: str) -> dict:
    """Per-stage timings (ms) of ``iterations`` full round trips with fresh keys in a temp folder."""
    with tempfile.TemporaryDirectory() as d:
        ring = KeyRing(Path(d) / "keys")
        ring.init(suite)
        gw = GatewayCrypto(ring, suite, replay_cache_size=iterations + 100)
        dev = DeviceCrypto(gw.public_keys(), "bench-user")
        payload = {"messages": [{"role": "user", "content": PROMPT}], "tier": "auto", "max_new_tokens": 16}
        response = fake_response(response_text)
        samples = {s: [] for s in STAGES}
        sizes = {}
        cpu0 = 0.0
        for i in range(iterations + 20):  # the first 20 are warm-up
            if i == 20:
                cpu0 = time.process_time()
            t0 = time.perf_counter_ns()
            env, pending = dev.seal(payload)
            t1 = time.perf_counter_ns()
            _, reply = gw.open(env)
            t2 = time.perf_counter_ns()
            sealed = reply.seal(response)
            t3 = time.perf_counter_ns()
            out = pending.open(sealed)
            t4 = time.perf_counter_ns()
            assert out == response
            if i >= 20:
                for name, a, b in zip(STAGES, (t0, t1, t2, t3), (t1, t2, t3, t4), strict=True):
                    samples[name].append((b - a) / 1e6)
            sizes = {"request_bytes": len(json.dumps({"pet_envelope": env})),
                     "request_plain_bytes": len(json.dumps(payload)),
                     "response_bytes": len(json.dumps({"pet_envelope": sealed})),
                     "response_plain_bytes": len(json.dumps(response))}
    cpu_ms = (time.process_time() - cpu0) * 1000 / iterations
    totals = [sum(samples[s][i] for s in STAGES) for i in range(iterations)]
    out = {s: statistics.median(v) for s, v in samples.items()}
    out["total_median_ms"] = statistics.median(totals)
    out["total_p95_ms"] = sorted(totals)[int(0.95 * (len(totals) - 1))]
    out["total_cpu_ms"] = cpu_ms  # CPU time per round trip: less disturbed by other jobs than wall time
    out.update(sizes)
    return out


def time_generate(runs: int, max_new_tokens: int) -> dict:
    """Median latency of a real SmolLM2 generate of ``max_new_tokens`` tokens (1 torch thread, greedy)."""
    from pet.models.lm import CausalLM
    from pet.models.prepare import builtin_path

    lm = CausalLM.load(builtin_path("smollm2-135m-instruct"), threads=1)
    messages = [{"role": "user", "content": PROMPT}]
    lm.generate(messages, max_new_tokens=max_new_tokens)  # warm-up
    secs, cpus, text, tokens = [], [], "", 0
    for i in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        g = lm.generate(messages, max_new_tokens=max_new_tokens)
        secs.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        text, tokens = g.text, g.usage.completion_tokens
        print(f"  generate {i + 1}/{runs}: {secs[-1] * 1000:.0f} ms", flush=True)
    return {"median_ms": statistics.median(secs) * 1000, "median_cpu_ms": statistics.median(cpus) * 1000,
            "min_ms": min(secs) * 1000, "max_ms": max(secs) * 1000,
            "runs": runs, "completion_tokens": tokens, "text": text}


def main() -> int:
    """Run the benchmark and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=300, help="timed round trips per suite")
    ap.add_argument("--generate-runs", type=int, default=7, help="timed SmolLM2 generates")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--no-model", action="store_true", help="skip the SmolLM2 baseline (crypto timings only)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    info = machine_info(threads=1)
    print(f"machine: {info['nproc']} cores, {info['cpu']}, 1 thread, load {info['load_avg_1m']:.2f}", flush=True)
    gen = None
    if not args.no_model:
        print(f"SmolLM2-135M-Instruct, {args.max_new_tokens} new tokens, {args.generate_runs} runs", flush=True)
        gen = time_generate(args.generate_runs, args.max_new_tokens)
    text = gen["text"] if gen else "Curling yellow leaves usually mean uneven watering or too much fertiliser."
    suites = {}
    for name in SUITES:
        print(f"suite {name}: {args.iterations} round trips", flush=True)
        suites[name] = r = time_suite(name, args.iterations, text)
        if gen:
            r["overhead_pct_of_generate"] = 100 * r["total_median_ms"] / gen["median_ms"]
            r["overhead_pct_of_generate_cpu"] = 100 * r["total_cpu_ms"] / gen["median_cpu_ms"]
    base = suites[next(iter(SUITES))]["total_cpu_ms"]
    head = (f"| suite | {' | '.join(s + ' ms' for s in STAGES)} | total median ms | p95 ms | CPU ms | "
            "CPU vs X25519 | request B (plain) | response B (plain) | % of generate (wall) | % of generate (CPU) |")
    lines = [head, "|" + "---|" * (len(STAGES) + 9)]
    for name, r in suites.items():
        pct = f"{r['overhead_pct_of_generate']:.3f} %" if gen else "-"
        pct_cpu = f"{r['overhead_pct_of_generate_cpu']:.3f} %" if gen else "-"
        lines.append(f"| {name} | " + " | ".join(f"{r[s]:.3f}" for s in STAGES)
                     + f" | {r['total_median_ms']:.3f} | {r['total_p95_ms']:.3f} | {r['total_cpu_ms']:.3f} | "
                     f"{r['total_cpu_ms'] / base:.2f}x | {r['request_bytes']} ({r['request_plain_bytes']}) | "
                     f"{r['response_bytes']} ({r['response_plain_bytes']}) | {pct} | {pct_cpu} |")
    if gen:
        lines.append(f"\nSmolLM2-135M-Instruct generate of {gen['completion_tokens']} tokens: median "
                     f"{gen['median_ms']:.0f} ms wall ({gen['median_cpu_ms']:.0f} ms CPU) over {gen['runs']} runs "
                     f"(min {gen['min_ms']:.0f}, max {gen['max_ms']:.0f}).")
    lines.append(f"Machine: {info['nproc']} cores, {info['cpu']}, 1 thread, 1-min load {info['load_avg_1m']:.2f} "
                 "(shared with other jobs: timings are noisy).")
    table = "\n".join(lines)
    print(table)
    result = {"machine": info, "iterations": args.iterations, "suites": suites, "generate": gen,
              "goal": "crypto total median < 1 % of median request latency",
              "unix_time": time.time()}
    save_results(RESULTS / "crypto_overhead", result, "# Crypto overhead per request\n\n" + table,
                 lambda path: _plot(suites, gen, path))
    return 0


def _plot(suites: dict, gen: dict | None, path: Path) -> None:
    plt = pyplot()
    short = {"x25519-hkdf-sha256-aes256gcm": "X25519", "mlkem768-x25519-hkdf-sha256-aes256gcm": "ML-KEM-768+X25519"}
    fig, ax = plt.subplots(figsize=(8, 3.2))
    names = list(suites)
    left = [0.0] * len(names)
    for stage in STAGES:
        vals = [suites[n][stage] for n in names]
        ax.barh([short.get(n, n) for n in names], vals, left=left, label=stage)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlabel("milliseconds per request (median of each stage)")
    title = "HPKE cost per request round trip (AES-256-GCM, HKDF-SHA256)"
    if gen:
        title += f"\nfor scale: SmolLM2 16-token generate median {gen['median_ms']:.0f} ms wall on the same machine"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
