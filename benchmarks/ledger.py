"""What metering costs: ledger events per second and the latency it adds to one request.

    python benchmarks/ledger.py [--events 2000] [--full-events 400] [--procs 4] [--requests 300]

Side by side in one run, on a fresh SQLite file in a temp folder on the same disk as the repo:

* throughput of ``Ledger.record_usage`` with ``synchronous=full`` (each event fsynced; the default) and
  ``synchronous=normal`` (WAL, fsync at checkpoints), from one process and from ``--procs`` processes writing
  the same file at once (the multi-replica case);
* per-event latency (p50/p95/p99) of the direct call and of ``await Meter.arecord_usage`` (the worker-thread
  call the request path uses);
* the latency added per request: ``POST /v1/chat/completions`` on the real OpenAI route module, in-process
  (FastAPI TestClient) over a gateway stand-in that answers instantly, with metering off vs on. The stand-in
  isolates metering from generation time (a real answer takes 100s of ms, which would hide a 1 ms cost).

Writes ``benchmarks/results/ledger.json``, ``ledger.md`` (the table) and ``ledger.png``. Numbers are from a
shared 2-core machine: treat them as orders of magnitude and compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, pct, pyplot, save_results  # noqa: E402
from pet.ledger import Ledger, Meter  # noqa: E402
from pet.machine import machine_info  # noqa: E402


def pct_ms(seconds: list[float], q: float) -> float:
    """The q-quantile (0..1) of durations in seconds, in milliseconds."""
    return pct(seconds, q) * 1000.0


# ----------------------------------------------------------------------------------------------------------------
# Throughput and per-event latency


def _write(path: str, sync: str, worker: int, n: int, out: mp.Queue | None = None, ready=None, go=None) -> list[float]:
    led = Ledger(path, synchronous=sync, busy_timeout_s=60)
    if ready is not None:
        ready.put(worker)
        go.wait()  # all writers start together, after their interpreter start-up
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        led.record_usage(f"w{worker}-{i}", f"user{i % 7}", "tet"[i % 3], 40, 60)
        times.append(time.perf_counter() - t0)
    if out is not None:
        out.put(times)
    return times


def throughput(folder: Path, sync: str, procs: int, n: int) -> dict:
    """Events/s of ``procs`` processes writing ``n`` events each to one new ledger file."""
    path = str(folder / f"tp-{sync}-{procs}.sqlite")
    Ledger(path).close()
    if procs == 1:
        t0 = time.perf_counter()
        times = _write(path, sync, 0, n)
    else:
        # clean processes (like Serve replicas), never forks of a process that has ledgers open
        ctx = mp.get_context("forkserver")
        q, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        ps = [ctx.Process(target=_write, args=(path, sync, w, n, q, ready, go)) for w in range(procs)]
        for p in ps:
            p.start()
        for _ in ps:
            ready.get()
        t0 = time.perf_counter()
        go.set()
        times = [t for _ in ps for t in q.get()]
        for p in ps:
            p.join()
    wall = time.perf_counter() - t0
    rows = Ledger(path).counts().usage
    assert rows == procs * n, f"lost events: {rows} != {procs * n}"
    return {"case": f"record_usage sync={sync} x{procs} proc", "sync": sync, "procs": procs, "events": rows,
            "seconds": round(wall, 3), "events_per_s": round(rows / wall, 1), "p50_ms": round(pct_ms(times, .5), 3),
            "p95_ms": round(pct_ms(times, .95), 3), "p99_ms": round(pct_ms(times, .99), 3)}


def meter_latency(folder: Path, sync: str, n: int) -> dict:
    """Per-event latency of ``await Meter.arecord_usage`` inside an event loop."""
    meter = Meter(Ledger(folder / f"meter-{sync}.sqlite", synchronous=sync))

    async def run() -> list[float]:
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            await meter.arecord_usage(f"m{i}", "alice", "t", 40, 60)
            times.append(time.perf_counter() - t0)
        return times

    t0 = time.perf_counter()
    times = asyncio.run(run())
    wall = time.perf_counter() - t0
    return {"case": f"await Meter.arecord_usage sync={sync}", "sync": sync, "procs": 1, "events": n,
            "seconds": round(wall, 3), "events_per_s": round(n / wall, 1), "p50_ms": round(pct_ms(times, .5), 3),
            "p95_ms": round(pct_ms(times, .95), 3), "p99_ms": round(pct_ms(times, .99), 3)}


# ----------------------------------------------------------------------------------------------------------------
# Added latency per request on the OpenAI route


def instant_gateway(cfg):
    """A gateway with the OpenAI routes that answers /v1/generate payloads at once, so that only routing +
    metering time is measured."""
    from pet.ledger import Meter
    from pet.serve.guard import Admission
    from pet.serve.routes.openai import OpenAIRoutes

    class InstantGateway(_InstantGenerate, OpenAIRoutes):
        def __init__(self):
            self.cfg = cfg
            self.admission = Admission(cfg.serve.gateway.max_inflight, cfg.serve.gateway.retry_after_s)
            self.meter = Meter.from_config(cfg)

    return InstantGateway()


class _InstantGenerate:
    """Answers /v1/generate payloads at once."""

    def domains(self, refresh: bool = False) -> list[str]:
        return []

    async def generate(self, payload: dict) -> dict:
        return {"request_id": payload["request_id"], "text": "Paris.", "tier": "t", "domain": None,
                "fallback": False, "fallback_reason": None, "escalation": ["t"],
                "signals": {"mean_logprob": -0.1, "min_token_prob": 0.5, "mean_entropy": 0.3},
                "usage": {"prompt_tokens": 30, "completion_tokens": 2, "seconds": 0.0}, "finish_reason": "stop",
                "latency_ms": 0.0}


def request_latency(folder: Path, mode: str, n: int) -> dict:
    """Median latency of POST /v1/chat/completions with metering ``off``, ``full`` or ``normal``."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from pet.config.schema import PetConfig
    from pet.serve.routes import add_routes

    ledger = {"enabled": mode != "off", "path": str(folder / f"req-{mode}.sqlite"),
              "synchronous": "full" if mode == "off" else mode}
    cfg = PetConfig.model_validate({"crypto": {"allow_plaintext": True}, "ledger": ledger})
    app = FastAPI()
    add_routes(app, instant_gateway(cfg))
    body = {"model": "pet-t", "messages": [{"role": "user", "content": "Capital of France?"}], "user": "bench"}
    times = []
    with TestClient(app) as http:
        for i in range(n + 20):
            t0 = time.perf_counter()
            r = http.post("/v1/chat/completions", json=body, headers={"X-Request-Id": f"{mode}-{i}"})
            dt = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            if i >= 20:  # warm-up excluded
                times.append(dt)
    metered = Ledger(folder / f"req-{mode}.sqlite").counts().usage if mode != "off" else 0
    return {"case": f"POST /v1/chat/completions metering={mode}", "mode": mode, "requests": n,
            "metered_rows": metered, "p50_ms": round(pct_ms(times, .5), 3), "p95_ms": round(pct_ms(times, .95), 3),
            "mean_ms": round(statistics.fmean(times) * 1000, 3)}


# ----------------------------------------------------------------------------------------------------------------


def table(rows: list[dict], cols: list[str]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def plot(tp: list[dict], path: Path) -> None:
    """Bar chart of events/s per case (log scale)."""
    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(8, 3.6))
    vals = [r["events_per_s"] for r in tp]
    ax.barh([r["case"] for r in tp], vals, color="#4a7ab5")
    ax.set_xscale("log")
    ax.set_xlim(10, max(vals) * 3)
    ax.xaxis.set_minor_formatter(NullFormatter())
    for i, v in enumerate(vals):
        ax.text(v * 1.1, i, f"{v:,.0f}/s", va="center", fontsize=8)
    ax.set_xlabel("ledger events per second (log scale)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    """Run every case, print the tables, write JSON, markdown and PNG."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=2000, help="events per writer with synchronous=normal")
    ap.add_argument("--full-events", type=int, default=400, help="events per writer with synchronous=full")
    ap.add_argument("--procs", type=int, default=4, help="concurrent writer processes")
    ap.add_argument("--requests", type=int, default=300, help="HTTP requests per metering mode")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats per case (median reported)")
    ap.add_argument("--dir", default=None, help="folder for the temp ledgers (default: a temp dir under the repo)")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = Path(args.dir) if args.dir else RESULTS
    with tempfile.TemporaryDirectory(prefix=".ledger-bench-", dir=base) as tmp:
        folder = Path(tmp)
        cases = []
        for sync, n in (("full", args.full_events), ("normal", args.events)):
            for procs in (1, args.procs):
                cases.append((f"throughput sync={sync} procs={procs} events/proc={n}",
                              lambda k, s=sync, p=procs, n=n: throughput(folder / k, s, p, n)))
            cases.append((f"Meter.arecord_usage sync={sync} events={n}",
                          lambda k, s=sync, n=n: meter_latency(folder / k, s, n)))
        for mode in ("off", "normal", "full"):
            cases.append((f"HTTP requests metering={mode} x{args.requests}",
                          lambda k, m=mode: request_latency(folder / k, m, args.requests)))
        # repeats are interleaved (case A, B, C, A, B, C, ...) so that a burst of load on the shared machine
        # hits every case alike; each case reports its median repeat
        runs: dict[str, list[dict]] = {name: [] for name, _ in cases}
        for rep in range(args.repeats):
            for name, fn in cases:
                print(f"[ledger bench] repeat {rep + 1}/{args.repeats}: {name} ...", flush=True)
                sub = folder / f"r{rep}-{len(runs[name])}-{abs(hash(name))}"
                sub.mkdir()
                runs[name].append(fn(sub.name))
        tp, req = [], []
        for name, _ in cases:
            key = "events_per_s" if "events_per_s" in runs[name][0] else "p50_ms"
            ordered = sorted(runs[name], key=lambda r: r[key])
            best = dict(ordered[len(ordered) // 2])
            best["repeats"] = [r[key] for r in runs[name]]
            (tp if key == "events_per_s" else req).append(best)
    off = req[0]["p50_ms"]
    for r in req:
        r["added_p50_ms"] = round(r["p50_ms"] - off, 3)
    full1 = next(r for r in tp if r["sync"] == "full" and r["procs"] == 1 and "record" in r["case"])
    norm1 = next(r for r in tp if r["sync"] == "normal" and r["procs"] == 1 and "record" in r["case"])
    result = {"machine": machine_info(threads=1), "disk_folder": str(base), "throughput": tp, "requests": req,
              "ratios": {"normal_vs_full_events_per_s": round(norm1["events_per_s"] / full1["events_per_s"], 1)}}
    t1 = table(tp, ["case", "events", "seconds", "events_per_s", "p50_ms", "p95_ms", "p99_ms", "repeats"])
    t2 = table(req, ["case", "requests", "metered_rows", "p50_ms", "p95_ms", "mean_ms", "added_p50_ms", "repeats"])
    m = result["machine"]
    head = (f"machine: {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}, load avg {m['load_avg_1m']} "
            f"(shared machine: noisy)")
    text = f"{head}\n\n{t1}\n\n{t2}\n\nsync=normal / sync=full events/s (1 process): " \
           f"{result['ratios']['normal_vs_full_events_per_s']}x\n"
    print("\n" + text)
    save_results(RESULTS / "ledger", result, text, lambda path: plot(tp, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
