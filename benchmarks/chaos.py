"""Hostile traffic and replica faults against a locally deployed graph (loopback only, bounded loops).

    python benchmarks/chaos.py            # ~4-6 min on 2 cores: starts its own local Ray, stops it at the end

What it does, in one run on the real SmolLM2 graph (plaintext allowed, short answers, a small random LoRA
expert ``python`` in a temporary registry):

1. **Hostile requests by kind** (deep JSON, huge numbers, duplicate keys, lone surrogates, wrong types, NaN,
   oversized bodies and headers, unknown fields, non-JSON, bad envelopes), each sent interleaved with valid
   requests at concurrency 12: 5xx count per kind, and valid requests that failed beside them (collateral).
2. **Stalled uploads**: 2x the Gateway's Serve slots per ingress port send headers and half a body, then
   stop; ``/healthz`` latency with them held vs without, and whether a generate request still answers.
3. **Burst at 2x capacity** (``serve.gateway.max_inflight``): shares of 200, JSON 503 with Retry-After, other.
4. **Replica kills under load**: T's and the ExpertPool's replica killed while closed-loop clients run:
   requests lost (non-200), retried (gateway metric), answered by fallback, seconds until the tier answers
   again.

Goals (issue 22): 0 5xx on bad input, 0 collateral failures, 0 requests lost to a replica kill, ``/healthz``
under 100 ms with stalled clients held. Writes ``benchmarks/results/chaos.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from benchmarks.common import RESULTS  # noqa: E402
from pet.io import atomic_write_json  # noqa: E402
from pet.machine import machine_info  # noqa: E402
from tests.integration.conftest import stalled_uploads  # noqa: E402  (shared with the integration test)

VALID = {"prompt": "Name a colour.", "tier": "t", "max_new_tokens": 3}
JSON_HEADERS = {"content-type": "application/json"}

# name -> (raw body, extra headers); every one must be refused with a 4xx
HOSTILE = {
    "deep_json": (b"[" * 5000 + b"]" * 5000, {}),
    "huge_integer": (b'{"prompt": "q", "max_new_tokens": ' + b"9" * 5000 + b"}", {}),
    "duplicate_keys": (b'{"prompt": "q", "prompt": "r"}', {}),
    "lone_surrogate_messages": (b'{"messages": [{"role": "user", "content": "x\\ud800"}], "tier": "t"}', {}),
    "lone_surrogate_prompt": (b'{"prompt": "x\\udfff", "tier": "t"}', {}),
    "string_for_int": (b'{"prompt": "q", "max_new_tokens": "4"}', {}),
    "bool_for_float": (b'{"prompt": "q", "temperature": true}', {}),
    "nan": (b'{"prompt": "q", "temperature": NaN}', {}),
    "unknown_field": (b'{"prompt": "q", "evil": 1}', {}),
    "not_json": (b"\xff\xfe not json", {}),
    "empty_body": (b"", {}),
    "oversized_body": (b'{"prompt": "' + b"a" * (2 << 20) + b'"}', {}),
    "oversized_header": (json.dumps(VALID).encode(), {"x-filler": "a" * 40000}),
    "bad_envelope": (b'{"pet_envelope": {"v": 1, "kid": "nope", "enc": "AA", "ct": "AA"}}', {}),
    "many_values": (b'{"prompt": "q", "stop": [' + b'"a",' * 30000 + b'"a"]}', {}),
}


def post_raw(url: str, raw: bytes, headers: dict[str, str] | None = None, timeout: float = 120.0) -> int:
    """Status code of one POST /v1/generate (599 when the connection failed)."""
    try:
        return httpx.post(f"{url}/v1/generate", content=raw, headers=JSON_HEADERS | (headers or {}),
                          timeout=timeout).status_code
    except httpx.HTTPError:
        return 599


# ----------------------------------------------------------------------------------------------------------------
# Phases


def hostile_phase(url: str, per_kind: int) -> dict:
    """Each hostile kind ``per_kind`` times, interleaved with two valid requests each, at concurrency 12."""
    jobs = []
    for kind, (raw, headers) in HOSTILE.items():
        for _ in range(per_kind):
            jobs += [(kind, raw, headers), ("valid", json.dumps(VALID).encode(), {}),
                     ("valid", json.dumps(VALID).encode(), {})]
    with cf.ThreadPoolExecutor(12) as ex:
        codes = list(ex.map(lambda j: (j[0], post_raw(url, j[1], j[2])), jobs))
    out: dict = {"kinds": {}}
    for kind in HOSTILE:
        mine = [c for k, c in codes if k == kind]
        out["kinds"][kind] = {"sent": len(mine), "4xx": sum(400 <= c < 500 for c in mine),
                              "5xx": sum(c >= 500 for c in mine), "statuses": sorted(set(mine))}
    valid = [c for k, c in codes if k == "valid"]
    out["valid_sent"], out["collateral_failures"] = len(valid), sum(c != 200 for c in valid)
    out["hostile_5xx"] = sum(v["5xx"] for v in out["kinds"].values())
    return out


def _healthz_ms(url: str, n: int = 30) -> list[float]:
    out = []
    with httpx.Client(timeout=30) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            client.get(f"{url}/healthz")
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def stall_phase(urls: dict[str, str], n: int, body_timeout_s: float) -> dict:
    """/healthz latency with and without ``n`` stalled uploads per port; the 408 they finally get."""
    out = {}
    for name, url in urls.items():
        base = _healthz_ms(url)
        held = stalled_uploads(url, n)
        try:
            time.sleep(0.5)
            loaded = _healthz_ms(url)
            t0 = time.perf_counter()
            gen_status = post_raw(url, json.dumps(VALID).encode(), timeout=60)
            gen_s = time.perf_counter() - t0
            time.sleep(body_timeout_s + 1.0)
            got_408 = 0
            for s in held:
                s.settimeout(10)
                try:
                    got_408 += s.recv(64).startswith(b"HTTP/1.1 408")
                except OSError:
                    pass
        finally:
            for s in held:
                s.close()
        out[name] = {"stalled": n, "healthz_ms_idle_p50": round(statistics.median(base), 2),
                     "healthz_ms_stalled_p50": round(statistics.median(loaded), 2),
                     "healthz_ms_stalled_max": round(max(loaded), 2), "generate_status": gen_status,
                     "generate_s": round(gen_s, 2), "stalled_answered_408": got_408}
    return out


def burst_phase(url: str, n: int) -> dict:
    """``n`` concurrent T requests at once."""
    body = json.dumps({"prompt": "Write a poem about the sea.", "tier": "t", "max_new_tokens": 8}).encode()

    def one(_: int) -> tuple[int, bool]:
        try:
            r = httpx.post(f"{url}/v1/generate", content=body, headers=JSON_HEADERS, timeout=120)
        except httpx.HTTPError:
            return 599, False
        json_503 = r.status_code == 503 and "retry-after" in r.headers and \
            r.headers.get("content-type", "").startswith("application/json")
        return r.status_code, json_503

    with cf.ThreadPoolExecutor(n) as ex:
        res = list(ex.map(one, range(n)))
    codes = [c for c, _ in res]
    return {"sent": n, "ok": codes.count(200), "json_503_retry_after": sum(j for _, j in res),
            "other": sum(c not in (200, 503) for c in codes) + sum(c == 503 and not j for c, j in res),
            "statuses": {str(c): codes.count(c) for c in sorted(set(codes))}}


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def kill_phase(url: str, app: str, deployment: str, body: dict, clients: int, seconds: float) -> dict:
    """Closed-loop clients for ``seconds``; the deployment's replica is killed after a third of that."""
    import ray
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name=app)
    victim = handle.stats.remote().result(timeout_s=60)["actor_name"]
    retries0 = _metric(url, "pet_replica_retries_total")
    stop, results, lock = time.monotonic() + seconds, [], threading.Lock()
    raw = json.dumps(body).encode()

    def client() -> None:
        while time.monotonic() < stop:
            try:
                r = httpx.post(f"{url}/v1/generate", content=raw, headers=JSON_HEADERS, timeout=120)
                item = (r.status_code, r.json() if r.status_code == 200 else {})
            except (httpx.HTTPError, ValueError):
                item = (599, {})
            with lock:
                results.append(item)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    time.sleep(seconds / 3)
    killed_at = time.monotonic()
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    recovered_s = None
    while time.monotonic() - killed_at < 180:
        try:
            if handle.stats.remote().result(timeout_s=5)["actor_name"] != victim:
                recovered_s = round(time.monotonic() - killed_at, 1)
                break
        except Exception:
            pass
        time.sleep(0.5)
    for th in threads:
        th.join()
    codes = [c for c, _ in results]
    return {"deployment": deployment, "requests": len(results), "lost": sum(c != 200 for c in codes),
            "status_codes": sorted(set(codes)), "retried": int(_metric(url, "pet_replica_retries_total") - retries0),
            "fallback": sum(bool(b.get("fallback")) for _, b in results),
            "fallback_reasons": sorted({b.get("fallback_reason") for _, b in results if b.get("fallback")}),
            "seconds_to_new_replica": recovered_s}


# ----------------------------------------------------------------------------------------------------------------
# Graph


def start_graph(root: Path, port: int, direct_port: int) -> tuple[str, str | None, object]:
    """Local Ray + the pet graph with a random LoRA expert ``python``; returns (proxy url, direct url, cfg)."""
    import ray
    from ray import serve

    from pet.config.loader import parse_config
    from pet.expert.registry import ExpertRegistry
    from pet.models.embed import Embedder
    from pet.paths import resolve_model
    from pet.serve.app import build_app, logging_config
    from pet.serve.control import find_direct_url, http_options, serve_env, wait_healthy
    from tests.integration.conftest import PYTHON_EXEMPLARS, make_lora_adapter  # the tests' random LoRA

    reg = ExpertRegistry(root / "experts")
    adapter = make_lora_adapter(resolve_model("smollm2-135m-instruct", None), root / "adapter")
    reg.add("python", adapter, Embedder(threads=1).encode(PYTHON_EXEMPLARS), metrics={},
            base_model="smollm2-135m-instruct")
    fast = {"health_check_period_s": 1.0, "health_check_timeout_s": 20.0, "graceful_shutdown_timeout_s": 1.0,
            "ray_actor_options": {"num_cpus": 0.1}}
    cfg = parse_config({
        "traditional": {"generation": {"max_new_tokens": 8}, "deployment": fast},
        "expert": {"registry_dir": str(root / "experts"), "generation": {"max_new_tokens": 8}, "deployment": fast},
        "crypto": {"allow_plaintext": True, "keys_dir": str(root / "keys")},
        "ledger": {"path": str(root / "ledger.sqlite")},
        "serve": {"http": {"port": port, "direct_port": direct_port},
                  "gateway": {"body_timeout_s": 3.0, "deployment": fast}},
    }, "<chaos benchmark>")
    from pet.security.keys import ensure_keys

    ensure_keys(cfg)  # so bad envelopes meet a real key ring
    os.environ.update(serve_env(cfg))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options=http_options(cfg), logging_config=logging_config(cfg))
    serve.run(build_app(cfg), name=cfg.serve.app_name, route_prefix="/", logging_config=logging_config(cfg))
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, 300)
    return url, find_direct_url(cfg, timeout_s=60), cfg


def table(res: dict) -> str:
    """The printed summary."""
    h = res["hostile"]
    lines = ["| check | result | goal |", "|---|---|---|",
             f"| hostile requests: 5xx | {h['hostile_5xx']} of {sum(k['sent'] for k in h['kinds'].values())} | 0 |",
             f"| valid requests failed beside them | {h['collateral_failures']} of {h['valid_sent']} | 0 |"]
    for name, s in res["stalled"].items():
        lines.append(f"| /healthz ({name}) with {s['stalled']} stalled uploads: p50 / max ms | "
                     f"{s['healthz_ms_stalled_p50']} / {s['healthz_ms_stalled_max']} (idle p50 "
                     f"{s['healthz_ms_idle_p50']}); generate {s['generate_status']}; 408 to "
                     f"{s['stalled_answered_408']} | < 100 ms |")
    b = res["burst"]
    lines.append(f"| burst of {b['sent']} (2x max_inflight) | {b['ok']} answered, {b['json_503_retry_after']} JSON "
                 f"503 + Retry-After, {b['other']} other (statuses {b['statuses']}) | no plain-text 503 |")
    for k in res["kills"]:
        lines.append(f"| {k['deployment']} replica killed under load | {k['lost']} lost of {k['requests']}, "
                     f"{k['retried']} retried, {k['fallback']} fallback {k['fallback_reasons']}, new replica after "
                     f"{k['seconds_to_new_replica']} s | 0 lost |")
    lines += ["", "| hostile kind | sent | 4xx | 5xx | statuses |", "|---|---:|---:|---:|---|"]
    lines += [f"| {k} | {v['sent']} | {v['4xx']} | {v['5xx']} | {v['statuses']} |" for k, v in h["kinds"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every phase and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-kind", type=int, default=4, help="requests per hostile kind")
    ap.add_argument("--kill-seconds", type=float, default=45.0, help="load duration around each replica kill")
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--out", type=Path, default=RESULTS / "chaos.json")
    args = ap.parse_args(argv)
    info = machine_info(loadavg_start=os.getloadavg())
    import ray
    from ray import serve

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pet-chaos-") as tmp:
        try:
            url, direct, cfg = start_graph(Path(tmp), args.port, args.port + 100)
            print(f"[chaos] graph ready in {time.monotonic() - t0:.0f} s at {url} (direct: {direct})", flush=True)
            gw = cfg.serve.gateway
            res: dict = {"machine": info}
            print("[chaos] 1/4 hostile requests ...", flush=True)
            res["hostile"] = hostile_phase(url, args.per_kind)
            print("[chaos] 2/4 stalled uploads ...", flush=True)
            urls = {"proxy": url} | ({"direct": direct} if direct else {})
            res["stalled"] = stall_phase(urls, 2 * gw.deployment.max_ongoing_requests, gw.body_timeout_s)
            print("[chaos] 3/4 burst ...", flush=True)
            res["burst"] = burst_phase(url, 2 * gw.max_inflight)
            print("[chaos] 4/4 replica kills (T, then E) ...", flush=True)
            res["kills"] = [
                kill_phase(url, cfg.serve.app_name, "Traditional", {**VALID, "max_new_tokens": 8}, 6,
                           args.kill_seconds),
                kill_phase(url, cfg.serve.app_name, "ExpertPool",
                           {"prompt": "How do I sort a list in Python?", "tier": "e", "domain": "python",
                            "max_new_tokens": 8}, 6, args.kill_seconds),
            ]
        finally:
            if ray.is_initialized():
                serve.shutdown()
            ray.shutdown()
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["goals"] = {
        "no_5xx_on_bad_input": res["hostile"]["hostile_5xx"] == 0,
        "no_collateral_failures": res["hostile"]["collateral_failures"] == 0,
        "no_request_lost_to_a_kill": all(k["lost"] == 0 for k in res["kills"]),
        "healthz_under_100ms_with_stalled_clients": all(s["healthz_ms_stalled_max"] < 100
                                                        for s in res["stalled"].values()),
    }
    res["seconds"] = round(time.monotonic() - t0, 1)
    print(table(res))
    print("goals:", json.dumps(res["goals"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
