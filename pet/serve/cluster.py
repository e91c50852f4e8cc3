"""A Ray cluster of several nodes on this one machine, all on loopback: for the cluster tests, benchmarks and docs.

    python -m pet.serve.cluster start [--workers 1] [--config deployments/cluster.yaml]   # prints the address
    python -m pet.serve.cluster status
    python -m pet.serve.cluster stop-node w1        # lose a worker node (its processes get SIGKILL)
    python -m pet.serve.cluster stop

(``scripts/cluster.sh`` is the same.) The head is started with ``ray start --head`` and each worker with ``ray start
--address``, each bound to 127.0.0.1 (without ``--node-ip-address`` Ray binds the host's other address) and each
offering a custom resource named after it (``node_head``, ``node_w1``, ...) that a YAML
``ray_actor_options.resources`` pins a deployment to. Every node gets a temp folder of its own under
``/tmp/petray-<port>/``; stopping a node ends exactly the processes whose command line names that folder, so other
Ray instances on the machine survive (``ray stop`` would end them all). The cluster's facts are kept in
``<state dir>/cluster.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pet.io import atomic_write_json

HEAD = "head"
OBJECT_STORE_BYTES = 256 * 1024 * 1024  # per node; Ray's default (30 % of RAM each) is far more than pet moves


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_file() -> Path:
    """Where the running local cluster's facts (address, nodes, temp folders) are kept."""
    from pet.paths import state_dir

    return state_dir() / "cluster.json"


def node_resource(name: str) -> str:
    """The custom resource a node offers (one unit): ``node_head``, ``node_w1``."""
    return f"node_{name}"


def cluster_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every ``ray`` command of the cluster runs with (and that clients of it need).

    Ray 2.60 turns token authentication on for its CLI unless told otherwise; a loopback test cluster does not
    need it (a production cluster keeps it and hands its token to ``serve deploy``).
    """
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    return {**env, **(extra or {})}


class LocalCluster:
    """A head and ``workers`` worker nodes on 127.0.0.1, each with ``num_cpus`` CPUs and its own custom resource.

    ``env`` is added to every node's environment: Serve reads settings such as direct ingress and pet's body
    guard when its processes start (:func:`pet.serve.control.serve_env` of a config gives them).
    """

    def __init__(self, workers: int = 1, num_cpus: float = 1, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.dashboard_port = free_port()
        self.num_cpus = num_cpus
        self.env = dict(env or {})
        self.root = Path(f"/tmp/petray-{self.port}")  # short: Ray's socket paths under it must stay < 108 chars
        self.nodes: dict[str, str] = {}  # name -> temp dir
        self.worker_names = [f"w{i + 1}" for i in range(workers)]

    @property
    def address(self) -> str:
        """The GCS address clients pass to ``ray.init(address=...)`` / ``pet deploy --address``."""
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """The dashboard (job and Serve REST API) that ``serve deploy --address`` talks to."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def facts(self) -> dict[str, Any]:
        """What ``cluster.json`` records."""
        return {"address": self.address, "port": self.port, "dashboard_url": self.dashboard_url,
                "root": str(self.root), "nodes": dict(self.nodes)}

    def _ray_start(self, name: str, args: list[str]) -> None:
        temp = self.root / name
        temp.mkdir(parents=True, exist_ok=True)
        resources = json.dumps({node_resource(name): 1})
        # Nodes on one host must not share the agent's fixed default port; a small object store keeps memory low.
        cmd = [_ray_cli(), "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", f"{self.num_cpus:g}",
               "--resources", resources, "--temp-dir", str(temp), "--disable-usage-stats",
               "--dashboard-agent-listen-port", str(free_port()), "--object-store-memory", str(OBJECT_STORE_BYTES)]
        self.nodes[name] = str(temp)
        out = subprocess.run(cmd, env=cluster_env(self.env), capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            raise RuntimeError(f"ray start ({name}) failed with code {out.returncode}:\n{out.stdout[-2000:]}"
                               f"\n{out.stderr[-2000:]}")

    def start(self) -> dict[str, Any]:
        """Start the head, then the workers; returns (and records) the cluster's facts."""
        try:
            self._ray_start(HEAD, ["--head", "--port", str(self.port), "--dashboard-host", "127.0.0.1",
                                   "--dashboard-port", str(self.dashboard_port),
                                   "--ray-client-server-port", str(free_port())])
            for name in self.worker_names:
                self.add_worker(name)
        except BaseException:
            self.stop()
            raise
        return self.facts()

    def add_worker(self, name: str) -> None:
        """Start (or restart) worker node ``name`` and join it to the head."""
        self._ray_start(name, ["--address", self.address])
        atomic_write_json(cluster_file(), self.facts())

    def stop_node(self, name: str, grace_s: float = 0.0) -> int:
        """End every process of node ``name`` (SIGKILL after ``grace_s``; 0: at once, like a lost machine);
        returns how many there were."""
        temp = self.nodes.get(name)
        if temp is None:
            raise KeyError(f"no node {name!r} in this cluster (nodes: {', '.join(self.nodes)})")
        n = kill_tree_under(temp, grace_s)
        atomic_write_json(cluster_file(), self.facts())
        return n

    def stop(self) -> int:
        """Stop the workers, then the head; removes their temp folders (Ray's logs) and the record. Returns the
        number of processes ended."""
        n = 0
        for name in [k for k in self.nodes if k != HEAD] + ([HEAD] if HEAD in self.nodes else []):
            n += kill_tree_under(self.nodes[name], grace_s=5.0)
        shutil.rmtree(self.root, ignore_errors=True)  # the nodes' temp folders and logs
        try:
            cluster_file().unlink()
        except OSError:
            pass
        return n

    @classmethod
    def recorded(cls) -> LocalCluster:
        """The cluster ``cluster.json`` describes (started by another process)."""
        try:
            facts = json.loads(cluster_file().read_text())
        except (OSError, ValueError):
            raise RuntimeError(f"no local cluster is recorded in {cluster_file()}") from None
        c = cls(workers=0, port=int(facts["port"]))
        c.dashboard_port = int(facts["dashboard_url"].rsplit(":", 1)[1])
        c.root = Path(facts["root"])
        c.nodes = dict(facts["nodes"])
        return c


def _ray_cli() -> str:
    """The ``ray`` executable of this Python environment."""
    here = Path(sys.executable).with_name("ray")
    return str(here) if here.exists() else "ray"


def processes_under(temp_dir: str) -> list[int]:
    """Pids of the processes whose command line names ``temp_dir`` (one node's raylet, GCS, workers, agents)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(temp_dir + end in cmdline + " " for end in ("/", " ")):  # not /tmp/x/w10 for /tmp/x/w1
            pids.append(int(entry.name))
    return pids


def kill_tree_under(temp_dir: str, grace_s: float = 5.0) -> int:
    """SIGTERM the processes of one node (see :func:`processes_under`), SIGKILL what is left after ``grace_s``."""
    pids = processes_under(temp_dir)
    sig = signal.SIGTERM if grace_s > 0 else signal.SIGKILL
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while grace_s > 0 and processes_under(temp_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in processes_under(temp_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def main(argv: list[str] | None = None) -> int:
    """``start | status | stop-node NAME | stop``; see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m pet.serve.cluster", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start", help="start a head and worker nodes on 127.0.0.1")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--num-cpus", type=float, default=1)
    p.add_argument("--port", type=int, default=None, help="the head's GCS port (default: a free one)")
    p.add_argument("--config", default=None, help="pet YAML whose Serve environment (direct ingress, body guard) "
                                                  "the nodes start with")
    sub.add_parser("status", help="print the recorded cluster")
    p = sub.add_parser("stop-node", help="end one node's processes at once (a lost machine)")
    p.add_argument("name")
    sub.add_parser("stop", help="stop every node of the recorded cluster")
    args = ap.parse_args(argv)
    if args.cmd == "start":
        env = {}
        if args.config:
            from pet.config.loader import load_config
            from pet.serve.control import serve_env

            env = serve_env(load_config(args.config))
        c = LocalCluster(workers=args.workers, num_cpus=args.num_cpus, env=env, port=args.port)
        facts = c.start()
        atomic_write_json(cluster_file(), facts)
        print(json.dumps(facts, indent=2))
        return 0
    c = LocalCluster.recorded()
    if args.cmd == "status":
        print(json.dumps({**c.facts(), "processes": {n: len(processes_under(t)) for n, t in c.nodes.items()}},
                         indent=2))
    elif args.cmd == "stop-node":
        print(f"node {args.name}: ended {c.stop_node(args.name)} processes")
    else:
        print(f"cluster {c.address}: ended {c.stop()} processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
