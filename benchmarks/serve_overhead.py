"""Gateway overhead, decomposed: what the pet gateway adds over a direct DeploymentHandle call, next to what
Ray Serve's own HTTP path costs on this machine for a graph that does nothing.

    python benchmarks/serve_overhead.py                 # ~8-10 min on 2 cores: three Serve modes, 200 rounds each
    python benchmarks/serve_overhead.py --rounds 50 --modes default,direct

Each Serve mode runs in its own subprocess with its own local Ray (2 CPUs), because Serve reads these switches
from the environment when its processes start:

- ``default``: HTTP goes through Serve's proxy actor, which forwards the request to the ingress replica; the
  replica then fetches the request body from the proxy with a second actor call;
- ``direct``: ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``: every ingress replica also serves HTTP itself on a port
  of ``RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT`` (the proxy path stays available);
- ``throughput``: ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``, Ray's bundle of latency switches (direct ingress, user
  code on the replica's main loop, gRPC between deployments).

In each, two applications run side by side: the pet graph (Gateway -> Traditional, ExpertPool) and a *floor*
application of two trivial deployments with the same Serve settings (FastAPI ingress ``Front`` -> ``Echo``, no
model, access logs off). ``--rounds`` interleaved rounds then time: ``Echo.work`` and ``Traditional.generate``
(1 new token) through DeploymentHandles from the driver, and ``POST /floor/hop`` (ingress -> Echo) and
``POST /v1/generate`` (tier t, 1 new token: Gateway -> Traditional) over every HTTP path the mode has (proxy,
direct). The gateway's ``Server-Timing`` header splits its time into the wait for the body, its own work and
the awaited T call.

Reported per mode and HTTP path, as medians of per-round paired differences (HTTP minus handle) with a
bootstrap 95% interval: the *floor overhead* (what any FastAPI ingress plus one handle hop costs here) and the
*gateway overhead* (the issue's measure), also with T's own time removed from both calls (T reports it as
``replica_ms``; the gateway passes it on as ``tier`` in ``Server-Timing``): a 1-token T call varies by tens of
ms from call to call, which swamps a few ms of transport. Writes benchmarks/results/serve_overhead.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import RESULTS, pyplot, save_results, utc_now  # noqa: E402
from pet.io import atomic_write_json  # noqa: E402
from pet.machine import machine_info  # noqa: E402

DIRECT_PORTS = {"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "30100", "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "30164"}
MODES = {"default": {}, "direct": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", **DIRECT_PORTS},
         "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", **DIRECT_PORTS}}


def floor_app():
    """The trivial two-deployment graph (built here so the benchmark process pickles it by value)."""
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(name="Echo", ray_actor_options={"num_cpus": 0.1})
    class Echo:
        async def work(self, x: int) -> dict:
            return {"ok": x}

    @serve.deployment(name="Front", ray_actor_options={"num_cpus": 0.1})
    @serve.ingress(api)
    class Front:
        def __init__(self, echo) -> None:
            self.echo = echo

        @api.post("/hop")
        async def hop(self, body: dict) -> dict:
            return await self.echo.work.remote(1)

    return Front.bind(Echo.bind())


def direct_urls(lo: int, hi: int) -> dict[str, str]:
    """The direct-ingress HTTP servers of the two ingress replicas: pet answers /healthz, the floor does not."""
    import httpx

    found = {}
    for port in range(lo, hi + 1):
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2, trust_env=False)
        except httpx.HTTPError:
            continue
        found["pet" if r.status_code == 200 and "status" in r.text else "floor"] = f"http://127.0.0.1:{port}"
    return found


async def measure(urls: dict[str, str], handles: dict, rounds: int, warm: int = 10) -> dict:
    """Interleaved rounds over every path; seconds per path per round, and the gateway's Server-Timing parts."""
    import httpx

    gen = {"prompt": "Say yes.", "max_new_tokens": 1}
    calls: dict = {"floor handle": lambda: handles["echo"].work.remote(1),
                   "pet handle": lambda: handles["t"].generate.remote(gen)}
    out: dict = {}
    async with httpx.AsyncClient(timeout=120, trust_env=False) as http:

        async def post(url: str, body: dict):
            r = await http.post(url, json=body)
            r.raise_for_status()
            return r

        for via, base in (("proxy", urls["proxy_floor"]), ("direct", urls.get("direct_floor"))):
            if base:
                calls[f"floor http hop ({via})"] = lambda b=base: post(f"{b}/hop", {})
        for via, base in (("proxy", urls["proxy"]), ("direct", urls.get("direct_pet"))):
            if base:
                calls[f"pet http ({via})"] = lambda b=base: post(f"{b}/v1/generate", {**gen, "tier": "t"})
        out = {p: [] for p in calls}
        for i in range(warm + rounds):
            for p, call in calls.items():
                t0 = time.perf_counter()
                r = await call()
                dt = time.perf_counter() - t0
                if i < warm:
                    continue
                out[p].append(dt)
                if p == "pet handle":  # T reports its own time (batch wait + compute): the rest is transport
                    out.setdefault(f"{p} replica", []).append(r["replica_ms"] / 1e3)
                elif p.startswith("pet http"):
                    timing = dict(x.strip().split(";dur=") for x in r.headers["Server-Timing"].split(","))
                    for part in ("body", "gateway", "tier"):
                        out.setdefault(f"{p} server-timing {part}", []).append(float(timing[part]) / 1e3)
            if i >= warm and (i - warm + 1) % 25 == 0:
                print(f"  round {i - warm + 1}/{rounds}", flush=True)
    return out


def child(mode: str, rounds: int, port: int, out_path: str) -> None:
    """One Serve mode in this process: deploy both apps, measure, write the raw samples."""
    import ray
    from ray import serve

    from pet.config.loader import parse_config
    from pet.serve.app import build_app, logging_config
    from pet.serve.control import http_options, wait_healthy

    cfg = parse_config({"crypto": {"allow_plaintext": True}, "serve": {"http": {"port": port}}})
    log_cfg = logging_config(cfg)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options=http_options(cfg, port), logging_config=log_cfg)
        serve.run(build_app(cfg), name="pet", route_prefix="/", logging_config=log_cfg)
        serve.run(floor_app(), name="floor", route_prefix="/floor", logging_config=log_cfg)
        wait_healthy(f"http://127.0.0.1:{port}", 300)
        handles = {"t": serve.get_deployment_handle("Traditional", app_name="pet"),
                   "echo": serve.get_deployment_handle("Echo", app_name="floor")}
        urls = {"proxy": f"http://127.0.0.1:{port}"}
        if "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT" in MODES[mode]:
            found = direct_urls(int(DIRECT_PORTS["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]),
                                int(DIRECT_PORTS["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]))
            if set(found) != {"pet", "floor"}:
                raise RuntimeError(f"direct ingress servers not found (found {found})")
            urls |= {"direct_pet": found["pet"], "direct_floor": f"{found['floor']}/floor"}  # route prefixes kept
        urls["proxy_floor"] = f"{urls['proxy']}/floor"
        print(f"[{mode}] deployed ({urls}); {rounds} rounds", flush=True)
        samples = asyncio.run(measure(urls, handles, rounds))
        atomic_write_json(Path(out_path), {"mode": mode, "samples": samples, "load_avg_end": os.getloadavg()[0]})
    finally:
        try:
            serve.shutdown()
        except RuntimeError as err:  # throughput mode binds handles to the closed asyncio.run loop
            print(f"[{mode}] serve.shutdown: {err}; stopping Ray", flush=True)
        ray.shutdown()


def paired(a: list[float], b: list[float], seed: int = 0) -> dict:
    """Median of per-round differences b - a in ms, with a bootstrap 95% interval."""
    d = (np.asarray(b) - np.asarray(a)) * 1e3
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(d, size=(2000, d.size)), axis=1)
    return {"median_ms": round(float(np.median(d)), 2),
            "ci95_ms": [round(float(x), 2) for x in np.percentile(boots, [2.5, 97.5])]}


def summarise(s: dict) -> dict:
    """Per ingress path (proxy, direct): the floor's and the gateway's overhead over a handle call."""
    out: dict = {"median_ms": {p: round(statistics.median(v) * 1e3, 2) for p, v in s.items()}, "paths": {}}
    for via in ("proxy", "direct"):
        if f"pet http ({via})" not in s:
            continue
        st = {part: round(float(np.median(s[f"pet http ({via}) server-timing {part}"])) * 1e3, 3)
              for part in ("body", "gateway")}
        # T's compute varies by tens of ms between two calls of one request; subtracting what T reports as its
        # own time from each call leaves transport only, so the paired difference resolves milliseconds.
        handle_transport = np.subtract(s["pet handle"], s["pet handle replica"])
        http_transport = np.subtract(s[f"pet http ({via})"], s[f"pet http ({via}) server-timing tier"])
        out["paths"][via] = {
            "serve_floor_overhead": paired(s["floor handle"], s[f"floor http hop ({via})"]),
            "gateway_overhead": paired(s["pet handle"], s[f"pet http ({via})"]),
            "gateway_overhead_t_time_removed": paired(list(handle_transport), list(http_transport)),
            "gateway_body_wait_ms": st["body"], "gateway_own_ms": st["gateway"]}
    out["rounds"] = len(s["pet handle"])
    return out


def table(res: dict) -> str:
    lines = ["| Serve mode | HTTP path | floor: handle | floor: HTTP hop | **floor overhead** | pet: T handle "
             "(1 token) | pet: HTTP /v1/generate | gateway overhead | **gateway overhead, T's own time removed** | "
             "of which body wait | gateway own |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def ci(x: dict) -> str:
        return f"{x['median_ms']} [{x['ci95_ms'][0]}, {x['ci95_ms'][1]}]"

    for mode, r in res["modes"].items():
        m = r["median_ms"]
        for via, v in r["paths"].items():
            lines.append(f"| {mode} | {via} | {m['floor handle']} | {m[f'floor http hop ({via})']} | "
                         f"{ci(v['serve_floor_overhead'])} | {m['pet handle']} | {m[f'pet http ({via})']} | "
                         f"{ci(v['gateway_overhead'])} | {ci(v['gateway_overhead_t_time_removed'])} | "
                         f"{v['gateway_body_wait_ms']} | {v['gateway_own_ms']} |")
    mi = res["machine"]
    lines += ["", f"All in ms; medians over {res['rounds']} interleaved rounds; overheads are medians of per-round "
              "paired differences (HTTP minus handle) [bootstrap 95% interval]; body wait and own time from the "
              "gateway's Server-Timing header. Goal: gateway overhead < 5 ms.",
              f"Machine: {mi['nproc']} cores, {mi['cpu']}, load {mi['load_avg_1m']} at start; {res['when']}."]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    plt = pyplot()

    bars = [(f"{mode}\n{via}", v) for mode, r in res["modes"].items() for via, v in r["paths"].items()]
    x = np.arange(len(bars))
    fig, ax = plt.subplots(figsize=(8, 4))
    for j, (key, label) in enumerate((("serve_floor_overhead", "trivial graph (Serve floor)"),
                                      ("gateway_overhead_t_time_removed", "pet gateway (T's own time removed)"))):
        vals = np.array([v[key]["median_ms"] for _, v in bars])
        err = np.array([[val - v[key]["ci95_ms"][0], v[key]["ci95_ms"][1] - val]
                        for val, (_, v) in zip(vals, bars, strict=True)]).T
        ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, yerr=err, capsize=3, label=label)
    ax.axhline(5, color="#c44e52", ls="--", label="goal: 5 ms")
    ax.set_xticks(x, [b[0] for b in bars])
    ax.set_ylabel("HTTP minus handle call, ms (median of pairs)")
    ax.set_title(f"Ingress overhead by Serve mode and HTTP path, {res['machine']['nproc']} cores", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--modes", default=",".join(MODES), help="comma list of: " + ", ".join(MODES))
    ap.add_argument("--port", type=int, default=8766)
    ap.add_argument("--out", default=str(RESULTS / "serve_overhead"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.rounds, args.port, args.child_out)
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    res: dict = {"machine": machine_info(), "rounds": args.rounds, "modes": {},
                 "when": utc_now()}
    out = Path(args.out)
    for mode in modes:
        raw = out.with_name(f".{out.name}.{mode}.raw.json")
        print(f"Serve mode {mode}: starting Ray in a subprocess ...", flush=True)
        env = {**os.environ, **MODES[mode]}
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--child-out", str(raw), "--rounds",
                               str(args.rounds), "--port", str(args.port)], env=env)
        if proc.returncode != 0:
            print(f"Serve mode {mode} failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        data = json.loads(raw.read_text())
        raw.unlink()
        res["modes"][mode] = summarise(data["samples"]) | {"load_avg_end": data["load_avg_end"]}
    md = table(res)
    print("\n" + md)
    save_results(out, res, f"# serve_overhead ({res['when']})\n\n" + md, lambda path: plot(res, path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
