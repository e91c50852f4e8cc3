"""Throughput of the T deployment with ``@serve.batch`` on vs off, and the gateway's overhead.

    python benchmarks/serve_throughput.py                 # ~3-6 min on 2 cores
    python benchmarks/serve_throughput.py --max-new-tokens 16 --scale 2

Starts a local Ray (2 CPUs) and deploys two applications side by side: the full `pet` graph (Gateway,
Traditional with batching on, ExpertPool) and a second Traditional with batching off. Then, per
concurrency level (1, 4, 16), closed-loop clients call ``Traditional.generate`` through a
DeploymentHandle and we record requests/s and p50/p95 latency. Finally the same 1-token request is
sent alternately through the gateway over HTTP and straight to the handle: the median difference is the
gateway's overhead (HTTP proxy + FastAPI + validation + one more handle hop). Writes
``benchmarks/results/serve_throughput.{json,md,png}``. Timings on a shared machine are noisy; the load
average at start and end is recorded with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import RESULTS, pct, pyplot, save_results, utc_now  # noqa: E402
from pet.machine import machine_info  # noqa: E402


async def closed_loop(handle, payload: dict, concurrency: int, total: int) -> dict:
    """``concurrency`` clients each send requests back to back until ``total`` are answered."""
    lat: list[float] = []
    tokens = 0
    left = {"n": total}

    async def client() -> None:
        nonlocal tokens
        while left["n"] > 0:
            left["n"] -= 1
            t0 = time.perf_counter()
            out = await handle.generate.remote(payload)
            lat.append(time.perf_counter() - t0)
            tokens += out["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"concurrency": concurrency, "requests": total, "seconds": round(wall, 3),
            "req_per_s": round(total / wall, 3), "tok_per_s": round(tokens / wall, 2),
            "p50_ms": round(1000 * pct(lat, 0.5), 1), "p95_ms": round(1000 * pct(lat, 0.95), 1)}


async def overhead(url: str, handle, n: int) -> dict:
    """Median latency of the same 1-token request via gateway HTTP vs the direct handle, interleaved."""
    import httpx

    body = {"prompt": "Say yes.", "tier": "t", "max_new_tokens": 1}
    direct, via = [], []
    async with httpx.AsyncClient(timeout=120, trust_env=False) as http:
        for _ in range(3):  # warm both paths
            await handle.generate.remote({"prompt": body["prompt"], "max_new_tokens": 1})
            (await http.post(f"{url}/v1/generate", json=body)).raise_for_status()
        for _ in range(n):
            t0 = time.perf_counter()
            await handle.generate.remote({"prompt": body["prompt"], "max_new_tokens": 1})
            direct.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            (await http.post(f"{url}/v1/generate", json=body)).raise_for_status()
            via.append(time.perf_counter() - t0)
    d, g = statistics.median(direct), statistics.median(via)
    pairs = [b - a for a, b in zip(direct, via, strict=True)]
    return {"requests": n, "direct_p50_ms": round(1000 * d, 2), "gateway_p50_ms": round(1000 * g, 2),
            "overhead_p50_ms": round(1000 * (g - d), 2),
            "overhead_per_pair_p50_ms": round(1000 * statistics.median(pairs), 2)}


def plot(results: dict, path: Path) -> None:
    """req/s by concurrency, batched vs unbatched."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in results["throughput"].items():
        ax.plot([r["concurrency"] for r in rows], [r["req_per_s"] for r in rows], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests / s")
    ax.set_title(f"T deployment, {results['max_new_tokens']} new tokens, {results['machine']['nproc']} cores")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict) -> str:
    """The markdown table of the run."""
    rows = ["| batching | concurrency | requests | req/s | tok/s | p50 ms | p95 ms |", "|---|---|---|---|---|---|---|"]
    for name, rs in results["throughput"].items():
        for r in rs:
            rows.append(f"| {name} | {r['concurrency']} | {r['requests']} | {r['req_per_s']} | {r['tok_per_s']} | "
                        f"{r['p50_ms']} | {r['p95_ms']} |")
    lines = ["\n".join(rows), ""]
    for c, ratio in results["speedup_batched_over_unbatched"].items():
        lines.append(f"- batched / unbatched throughput at concurrency {c}: **{ratio}x**")
    o = results["gateway_overhead"]
    lines.append(f"- gateway overhead (median, 1-token request, {o['requests']} interleaved pairs): "
                 f"**{o['overhead_p50_ms']} ms** (HTTP via gateway {o['gateway_p50_ms']} ms vs handle "
                 f"{o['direct_p50_ms']} ms)")
    m = results["machine"]
    lines.append(f"- machine: {m['nproc']} cores, {m['cpu']}, 1 torch thread per replica, load average at start "
                 f"{m['loadavg_start'][0]:.1f}, at end {m['loadavg_end'][0]:.1f} (shared machine: noisy)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the requests per level")
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--overhead-requests", type=int, default=30)
    ap.add_argument("--out", default=str(RESULTS / "serve_throughput"))
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from pet.config.loader import parse_config
    from pet.serve.app import build_app, logging_config
    from pet.serve.control import http_options, wait_healthy
    from pet.traditional.deployment import Traditional

    info = machine_info(torch_threads_per_replica=1, loadavg_start=os.getloadavg())
    levels = [int(x) for x in args.levels.split(",")]
    port = 8765
    cfg = parse_config({
        "traditional": {"batching": {"max_batch_size": args.max_batch_size, "batch_wait_timeout_s": 0.02},
                        "deployment": {"max_ongoing_requests": 32, "max_queued_requests": -1}},
        "crypto": {"allow_plaintext": True},
        "serve": {"http": {"port": port}, "gateway": {"max_inflight": 31, "deployment": {"max_ongoing_requests": 32}}},
    })
    off = cfg.model_copy(deep=True)
    off.traditional.batching.enabled = False
    t_start = time.monotonic()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options=http_options(cfg, port), logging_config=logging_config(cfg))
    print("deploying the pet graph (batching on) and a Traditional with batching off ...", flush=True)
    serve.run(build_app(cfg), name="pet", route_prefix="/", logging_config=logging_config(cfg))
    serve.run(Traditional.options(**off.traditional.deployment.serve_options(), logging_config=logging_config(off))
              .bind(off.model_dump(mode="json")), name="t-unbatched", route_prefix=None)
    wait_healthy(f"http://127.0.0.1:{port}", 300)
    print(f"ready in {time.monotonic() - t_start:.0f} s", flush=True)
    handles = {"on": serve.get_deployment_handle("Traditional", app_name="pet"),
               "off": serve.get_deployment_handle("Traditional", app_name="t-unbatched")}
    payload = {"prompt": "Write a short sentence about the sea.", "max_new_tokens": args.max_new_tokens}

    async def run_all() -> dict:
        out: dict = {"throughput": {"on": [], "off": []}}
        for c in levels:
            total = max(c * 2, int(round({1: 6, 4: 12}.get(c, 2 * c) * args.scale)))
            for name in ("on", "off"):
                await handles[name].generate.remote(payload)  # warm
                row = await closed_loop(handles[name], payload, c, total)
                out["throughput"][name].append(row)
                print(f"batching {name:>3}  c={c:<3} {row['req_per_s']:7.2f} req/s  p50 {row['p50_ms']:8.1f} ms  "
                      f"p95 {row['p95_ms']:8.1f} ms", flush=True)
        out["gateway_overhead"] = await overhead(f"http://127.0.0.1:{port}", handles["on"], args.overhead_requests)
        print(f"gateway overhead p50 {out['gateway_overhead']['overhead_p50_ms']} ms", flush=True)
        return out

    try:
        res = asyncio.run(run_all())
    finally:
        serve.shutdown()
        ray.shutdown()
    info["loadavg_end"] = os.getloadavg()
    res["throughput"] = {"batching on": res["throughput"]["on"], "batching off": res["throughput"]["off"]}
    res["speedup_batched_over_unbatched"] = {
        str(a["concurrency"]): round(a["req_per_s"] / b["req_per_s"], 2)
        for a, b in zip(res["throughput"]["batching on"], res["throughput"]["batching off"], strict=True)}
    res.update(machine=info, max_new_tokens=args.max_new_tokens, max_batch_size=args.max_batch_size,
               model="smollm2-135m-instruct (fp32, torch)", wall_s=round(time.monotonic() - t_start, 1),
               when=utc_now())
    md = table(res)
    print("\n" + md)
    save_results(args.out, res, f"# serve_throughput ({res['when']})\n\n" + md, lambda path: plot(res, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
