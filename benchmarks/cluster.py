"""pet on a two-node Ray cluster (a head and a worker started with ``ray start`` on loopback, one CPU each):
throughput of T with one replica vs two replicas on two nodes, and recovery after losing the worker node.

    python benchmarks/cluster.py                   # ~10 min on 2 cores: starts its own cluster, stops it at the end
    python benchmarks/cluster.py --seconds 30 --trials 1

Phases, in one run on the real SmolLM2 graph (deployments/cluster.yaml, plaintext allowed, a temporary registry
with the starter experts, a private state folder so a user's own deployment is untouched):

1. **Throughput** at ``--concurrency`` closed-loop clients asking T (``max_new_tokens`` fixed) for ``--seconds``,
   with T (a) one replica pinned to the worker, (b) two replicas with ``max_replicas_per_node: 1`` (one per node).
   Requests/s, completion tokens/s, latency p50/p95, non-200 count, and the ratio (b)/(a).
2. **Node loss** (``--trials`` times): T and the ExpertPool with two replicas each, spread over both nodes; clients
   ask T and the python expert in turn; the worker's processes are SIGKILLed (a lost machine). Requests lost
   (non-200), E answers given by T as fallback, seconds until Serve runs both T replicas on the head again,
   the longest request in flight over the kill, and answers per 5 s before and after. The worker is restarted
   between trials.

On one machine both nodes share its two cores, so (b) measures what a second replica buys when it has a core of
its own, minus what the proxy, gateway and Ray's own processes take from the same cores. Writes
``benchmarks/results/cluster.{json,md,png}`` and prints a table.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import yaml  # noqa: E402

from benchmarks.common import RESULTS, ROOT, pct, pyplot, save_results, utc_now  # noqa: E402
from pet.machine import machine_info  # noqa: E402

PROMPTS = ["Count from one to ten.", "Name three colours.", "What is the capital of France?",
           "Give me a tip for sleeping well.", "Write a short greeting.", "What is two plus two?"]
PY_PROMPT = "How do I reverse a list in Python?"


def graph_config(root: Path, port: int, t_deployment: dict[str, Any],
                 pool_deployment: dict[str, Any] | None = None) -> Path:
    """deployments/cluster.yaml with T's deployment options replaced, a private registry and ledger; its path."""
    cfg = yaml.safe_load((ROOT / "deployments" / "cluster.yaml").read_text())
    cfg["traditional"]["deployment"] = t_deployment
    if pool_deployment is not None:
        cfg["expert"]["deployment"] = pool_deployment
    cfg["expert"]["registry_dir"] = str(root / "experts")
    cfg["ledger"] = {"path": str(root / "ledger.sqlite")}
    cfg["crypto"]["keys_dir"] = str(root / "keys")
    cfg["serve"]["http"]["port"] = port
    path = root / f"graph-{int(time.monotonic() * 1000)}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def deploy(path: Path, address: str) -> str:
    """``pet deploy PATH --address ADDRESS`` as a user runs it (returns once the gateway answers); the proxy URL."""
    from pet.serve.control import read_state

    out = subprocess.run([sys.executable, "-m", "pet", "deploy", str(path), "--address", address, "--wait", "400"],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"pet deploy failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
    return read_state()["url"]


def t_status(url: str) -> list[dict]:
    """T's replicas as ``/v1/status`` places them (state, node resources, head)."""
    try:
        r = httpx.get(f"{url}/v1/status", timeout=30, trust_env=False)
        return r.json()["deployments"]["Traditional"]["placement"] if r.status_code == 200 else []
    except (httpx.HTTPError, ValueError, KeyError):
        return []


def wait_running(url: str, n: int, timeout_s: float = 300) -> list[dict]:
    """Wait until T runs ``n`` replicas; their placement."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = [p for p in t_status(url) if p["state"] == "RUNNING"]
        if len(running) == n:
            return running
        time.sleep(2)
    raise RuntimeError(f"T did not reach {n} running replicas in {timeout_s:.0f} s")


class Load:
    """Closed-loop clients; each row: (sent, seconds, status, tier asked, fallback, completion tokens)."""

    def __init__(self, url: str, clients: int, max_new_tokens: int, mix_expert: bool = False) -> None:
        self.url, self.clients, self.max_new_tokens, self.mix_expert = url, clients, max_new_tokens, mix_expert
        self.rows: list[tuple] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, i: int) -> None:
        k = i
        with httpx.Client(timeout=300, trust_env=False) as client:
            while not self.stop.is_set():
                k += 1
                expert = self.mix_expert and k % 2 == 0
                body = ({"prompt": PY_PROMPT, "tier": "e", "domain": "python"} if expert
                        else {"prompt": PROMPTS[k % len(PROMPTS)], "tier": "t"})
                body["max_new_tokens"] = self.max_new_tokens
                t0 = time.monotonic()
                try:
                    r = client.post(f"{self.url}/v1/generate", json=body)
                    js = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                    row = (t0, time.monotonic() - t0, r.status_code, "e" if expert else "t", bool(js.get("fallback")),
                           int(js.get("usage", {}).get("completion_tokens", 0)))
                except httpx.HTTPError:
                    row = (t0, time.monotonic() - t0, None, "e" if expert else "t", False, 0)
                with self.lock:
                    self.rows.append(row)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=300)


def throughput(url: str, clients: int, seconds: float, max_new_tokens: int, warmup_s: float = 8) -> dict:
    """Answers per second and tokens per second over ``seconds`` after ``warmup_s``."""
    with Load(url, clients, max_new_tokens) as load:
        time.sleep(warmup_s)
        t0 = time.monotonic()
        time.sleep(seconds)
        t1 = time.monotonic()
    done = [r for r in load.rows if t0 <= r[0] + r[1] <= t1]  # answers that arrived inside the window
    ok = [r for r in done if r[2] == 200]
    if not ok:
        raise RuntimeError(f"no request answered in the window: statuses {statuses(load.rows)}")
    lat = [r[1] for r in ok]
    return {"requests": len(done), "non_200": len(done) - len(ok), "statuses": statuses(done),
            "req_per_s": len(ok) / (t1 - t0), "tokens_per_s": sum(r[5] for r in ok) / (t1 - t0),
            "p50_s": pct(lat, 0.5), "p95_s": pct(lat, 0.95), "max_s": max(lat), "seconds": t1 - t0,
            "latencies_s": [round(x, 3) for x in lat]}


def statuses(rows: list[tuple]) -> dict[str, int]:
    """How many rows ended with each HTTP status (``None``: no answer)."""
    out: dict[str, int] = {}
    for r in rows:
        out[str(r[2])] = out.get(str(r[2]), 0) + 1
    return out


def node_loss(cluster: Any, url: str, clients: int, max_new_tokens: int, before_s: float = 15,
              after_s: float = 20) -> dict:
    """Kill the worker under mixed T/E traffic; what was lost and how long recovery took."""
    with Load(url, clients, max_new_tokens, mix_expert=True) as load:
        time.sleep(before_s)
        killed_at = time.monotonic()
        killed = cluster.stop_node("w1")
        recovered = None
        while time.monotonic() - killed_at < 300:
            running = [p for p in t_status(url) if p["state"] == "RUNNING"]
            if len(running) == 2 and all(p["head"] for p in running):
                recovered = round(time.monotonic() - killed_at, 1)
                break
            time.sleep(1)
        time.sleep(after_s)
    rows = load.rows
    over = [r for r in rows if r[0] < killed_at < r[0] + r[1]]
    buckets: dict[int, int] = {}
    for r in rows:
        if r[2] == 200:
            b = int((r[0] + r[1] - killed_at) // 5) * 5
            buckets[b] = buckets.get(b, 0) + 1
    return {"processes_killed": killed, "requests": len(rows), "lost": sum(1 for r in rows if r[2] != 200),
            "e_requests": sum(1 for r in rows if r[3] == "e"),
            "e_fallback_to_t": sum(1 for r in rows if r[3] == "e" and r[4]),
            "e_fallback_after_kill": sum(1 for r in rows if r[3] == "e" and r[4] and r[0] + r[1] >= killed_at),
            "in_flight_at_kill": len(over), "longest_over_kill_s": max((r[1] for r in over), default=0.0),
            "t_back_to_2_on_head_s": recovered, "answers_per_5s": dict(sorted(buckets.items()))}


def spread(n: int, per_node: int | None = None, pin: str | None = None) -> dict[str, Any]:
    """A deployment section: ``n`` replicas, optionally at most ``per_node`` per node or pinned to a node."""
    opts: dict[str, Any] = {"num_cpus": 0.1}
    if pin:
        opts["resources"] = {pin: 0.01}
    dep: dict[str, Any] = {"num_replicas": n, "ray_actor_options": opts}
    if per_node:
        dep["max_replicas_per_node"] = per_node
    return dep


def table(result: dict) -> str:
    a, b = result["throughput"]["one_replica"], result["throughput"]["two_replicas"]
    args = result["args"]
    lines = [f"## T throughput at concurrency {args['concurrency']} ({args['max_new_tokens']} new tokens)", "",
             f"Means over {args['rounds']} interleaved rounds of {args['seconds']:.0f} s.", "",
             "| T replicas | req/s | tokens/s | p50 s | p95 s | non-200 |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in (("1 (worker)", a), ("2 (one per node)", b)):
        lines.append(f"| {name} | {r['req_per_s']:.2f} | {r['tokens_per_s']:.1f} | {r['p50_s']:.2f} | "
                     f"{r['p95_s']:.2f} | {r['non_200']} |")
    by_round = ", ".join(f"{x:.2f}x" for x in result["throughput"]["ratio_tokens_per_s_by_round"])
    lines.append(f"| ratio 2/1 | {result['throughput']['ratio_req_per_s']:.2f}x | "
                 f"{result['throughput']['ratio_tokens_per_s']:.2f}x (rounds: {by_round}) | | | |")
    lines += ["", "## Worker node lost under mixed T/E traffic", "",
              "| trial | requests | lost | in flight at kill | longest over kill s | E -> T fallback | "
              "T back to 2 on head s |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for i, t in enumerate(result["node_loss"], 1):
        lines.append(f"| {i} | {t['requests']} | {t['lost']} | {t['in_flight_at_kill']} | "
                     f"{t['longest_over_kill_s']:.1f} | {t['e_fallback_to_t']}/{t['e_requests']} | "
                     f"{t['t_back_to_2_on_head_s'] or 'not within 300'} |")
    m = result["machine"]
    lines.append(f"\n{m['cpu']}, {m['nproc']} cores, load {m['load_avg_1m']} at the start; {result['started']} to "
                 f"{result.get('finished', '?')}.")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    tp = result["throughput"]
    ax1.bar(["1 replica", "2 replicas\n(one per node)"],
            [tp["one_replica"]["tokens_per_s"], tp["two_replicas"]["tokens_per_s"]], color=["#888", "#2a7"])
    ax1.set_ylabel("completion tokens / s")
    ax1.set_title(f"T at concurrency {result['args']['concurrency']}")
    for i, t in enumerate(result["node_loss"], 1):
        counts = {int(k): v for k, v in t["answers_per_5s"].items()}
        xs = list(range(min(counts), max(counts) + 5, 5))  # 5 s with no answer is a 0, not a gap
        ax2.plot(xs, [counts.get(x, 0) for x in xs], marker="o", label=f"trial {i}")
    ax2.axvline(0, color="red", linestyle="--", label="worker killed")
    ax2.set_xlabel("seconds after the kill")
    ax2.set_ylabel("answers per 5 s")
    ax2.set_title("node loss, mixed T/E traffic")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def throughput_phase(args: argparse.Namespace, cluster: Any, root: Path, port: int, first: Path) -> dict:
    """``--rounds`` rounds of (T x1 on the worker, T x2 one per node), each measured for ``--seconds``; interleaved
    so drift in the machine's load hits both settings alike."""
    rows = []
    for rnd in range(1, args.rounds + 1):
        for n in (1, 2):
            path = first if n == 1 else graph_config(root, port, spread(2, per_node=1))
            url = deploy(path, cluster.address)
            placed = wait_running(url, n)
            nodes = sorted("head" if p["head"] else "worker" for p in placed)
            if nodes != (["worker"] if n == 1 else ["head", "worker"]):
                raise RuntimeError(f"T x{n} is not placed as asked: {placed}")
            print(f"[round {rnd}/{args.rounds}] T x{n} on {' + '.join(nodes)}: {args.seconds:.0f} s at concurrency "
                  f"{args.concurrency}", flush=True)
            row = {"round": rnd, "replicas": n, **throughput(url, args.concurrency, args.seconds,
                                                              args.max_new_tokens)}
            print(f"      {row['req_per_s']:.2f} req/s, {row['tokens_per_s']:.1f} tokens/s, p50 {row['p50_s']:.1f} s",
                  flush=True)
            rows.append(row)
    out: dict[str, Any] = {"rounds": rows}
    for n, key in ((1, "one_replica"), (2, "two_replicas")):
        mine = [r for r in rows if r["replicas"] == n]
        out[key] = {k: sum(r[k] for r in mine) / len(mine) for k in ("req_per_s", "tokens_per_s", "p50_s", "p95_s",
                                                                   "max_s")}
        out[key]["non_200"] = sum(r["non_200"] for r in mine)
    out["ratio_req_per_s"] = out["two_replicas"]["req_per_s"] / max(out["one_replica"]["req_per_s"], 1e-9)
    out["ratio_tokens_per_s"] = out["two_replicas"]["tokens_per_s"] / max(out["one_replica"]["tokens_per_s"], 1e-9)
    out["ratio_tokens_per_s_by_round"] = [
        b["tokens_per_s"] / max(a["tokens_per_s"], 1e-9) for a, b in zip(rows[::2], rows[1::2], strict=True)]
    return out


def spread_t(cluster: Any, root: Path, port: int, attempts: int = 3) -> tuple[str, list[dict]]:
    """Deploy T (and the pool) with 2 uncapped replicas, one of T's on the worker: T pinned to the worker first,
    then unpinned, so Serve starts the new replicas beside a busy worker replica (its spreading is a preference,
    not a promise: up to ``attempts`` tries). An unchanged config would leave T where the last trial's recovery put
    it (both on the head). Uncapped, so the head can take both replicas after the kill."""
    for _ in range(attempts):
        wait_running(deploy(graph_config(root, port, spread(1, pin="node_w1"), spread(2)), cluster.address), 1)
        url = deploy(graph_config(root, port, spread(2), spread(2)), cluster.address)
        placed = wait_running(url, 2)
        if not all(p["head"] for p in placed):
            return url, placed
    raise RuntimeError(f"Serve put both T replicas on the head {attempts} times: {placed}")


def run(args: argparse.Namespace, root: Path) -> dict:
    from pet.config.loader import load_config
    from pet.expert.registry import ExpertRegistry
    from pet.expert.starter import install_starters
    from pet.io import atomic_write_json
    from pet.serve.cluster import LocalCluster, cluster_file, free_port
    from pet.serve.control import serve_env

    install_starters(ExpertRegistry(root / "experts"), names=("python",))
    port = free_port()
    first = graph_config(root, port, spread(1, pin="node_w1"))
    cluster = LocalCluster(workers=1, num_cpus=1, env=serve_env(load_config(first)))
    result: dict[str, Any] = {"machine": machine_info(), "started": utc_now(), "args": vars(args)}
    try:
        atomic_write_json(cluster_file(), cluster.start())
        print(f"cluster up at {cluster.address}: head + w1, one CPU each", flush=True)
        result["throughput"] = throughput_phase(args, cluster, root, port, first)
        result["node_loss"] = []
        for trial in range(args.trials):
            url, _ = spread_t(cluster, root, port)
            print(f"[3/3] node loss, trial {trial + 1}/{args.trials}: killing w1 under load", flush=True)
            t = node_loss(cluster, url, args.loss_clients, args.max_new_tokens)
            print(f"      {t['requests']} requests, {t['lost']} lost, T back after {t['t_back_to_2_on_head_s']} s",
                  flush=True)
            result["node_loss"].append(t)
            cluster.add_worker("w1")
    finally:
        cluster.stop()
    result["finished"] = utc_now()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop clients in the throughput phase")
    ap.add_argument("--seconds", type=float, default=75, help="measured seconds per throughput setting and round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (1 replica, 2 replicas), interleaved")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="tokens T writes per request")
    ap.add_argument("--trials", type=int, default=2, help="node-loss trials")
    ap.add_argument("--loss-clients", type=int, default=8, help="closed-loop clients during node loss")
    ap.add_argument("--out", default=str(RESULTS / "cluster"))
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # a stopped run still stops its cluster (the finally in run): SIGTERM becomes SystemExit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="pet-cluster-bench-") as tmp:
        os.environ["PET_STATE_DIR"] = str(Path(tmp) / "state")  # never the user's own serve.json / cluster.json
        result = run(args, Path(tmp))
    md = table(result)
    print(md)
    save_results(args.out, result, markdown=md, plot=lambda path: plot(result, path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
