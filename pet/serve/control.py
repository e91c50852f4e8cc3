"""Start, inspect and stop the Serve application (what ``pet deploy/status/shutdown`` call).

A local deployment starts Ray with ``address="local"`` (a leftover cluster file from ``ray start`` would
make a plain ``ray.init()`` join a stranger's cluster). :func:`spawn_detached` runs such a deployment in a
background process of its own, so ``pet deploy --detach`` returns while the application keeps running. The state
of the last deployment (pid, url, address) is kept in ``<state_dir>/serve.json`` for status/shutdown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pet.config.schema import PetConfig
from pet.io import atomic_write_json


def state_file() -> Path:
    """Where the last deployment's facts are kept."""
    from pet.paths import state_dir

    return state_dir() / "serve.json"


def read_state() -> dict[str, Any] | None:
    """The last deployment's facts, or None."""
    try:
        return json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None


def _url(cfg: PetConfig, port: int) -> str:
    """``http://host:port/prefix`` for a config (a wildcard bind address is reached on loopback)."""
    host = "127.0.0.1" if cfg.serve.http.host in ("0.0.0.0", "::") else cfg.serve.http.host
    return f"http://{host}:{port}{cfg.serve.route_prefix.rstrip('/')}"


def base_url(cfg: PetConfig) -> str:
    """The HTTP address of the gateway (through Serve's proxy) for a config."""
    return _url(cfg, cfg.serve.http.port)


DIRECT_PORT_SPAN = 64  # direct-ingress ports per deployment: one per ingress replica on a node


def serve_env(cfg: PetConfig) -> dict[str, str]:
    """Environment Serve reads when its processes start: the body guard, direct ingress, the throughput switch.

    The guard (:mod:`pet.serve.guard`) rides on Ray's ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` hook, which
    both the HTTP proxy and each direct-ingress server apply in front of Serve's own admission.
    """
    from pet.serve.guard import guard_env

    env: dict[str, str] = guard_env(cfg)
    if cfg.serve.throughput_optimized:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    port = cfg.serve.http.direct_port
    if port is not None:
        env |= {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
                "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + DIRECT_PORT_SPAN - 1)}
    elif cfg.serve.throughput_optimized:
        env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "0"  # the switch turns it on; the config asked for the proxy only
    return env


def http_options(cfg: PetConfig, port: int | None = None) -> dict[str, Any]:
    """``serve.start`` HTTP options: bind address and port. (The BodyGuard comes through :func:`serve_env`:
    Serve 2.60 refuses middlewares in HTTP options but applies the ones its proxy hook names.)"""
    return {"host": cfg.serve.http.host, "port": cfg.serve.http.port if port is None else port}


def env_assignments(env: dict[str, str]) -> str:
    """``K=V K=V``: the prefix a shell command (``ray start``) needs for ``env``."""
    return " ".join(f"{k}={v}" for k, v in env.items())


def _quiet_env() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def start_ray(cfg: PetConfig, address: str | None = None) -> dict[str, Any]:
    """Connect to a cluster (``address``) or start a local Ray instance; returns facts for the state file."""
    _quiet_env()
    import ray

    if address in (None, "local"):
        os.environ.update(serve_env(cfg))  # the local Ray's processes inherit this environment
        for attempt in range(3):  # Ray gives its raylet a fixed 30 s to start; a busy machine can miss it
            try:
                ray.init(address="local", num_cpus=cfg.serve.ray_num_cpus, include_dashboard=False,
                         log_to_driver=False, ignore_reinit_error=True)
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
        return {"address": "local"}
    ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
    facts = {"address": address}
    env = serve_env(cfg)
    if env:
        facts["note"] = ("on an existing cluster, serve.http.direct_port / serve.throughput_optimized apply only if "
                         "its Ray was started with " + env_assignments(env))
    return facts


def spawn_detached(config_path: str, wait_s: float = 600.0, log_path: Path | None = None) -> dict[str, Any]:
    """Run a blocking ``pet deploy`` in its own session (it owns a local Ray) and wait until it is healthy.

    ``pet shutdown`` later sends it SIGTERM, so only the processes this deployment started are stopped
    (``ray stop`` would kill every Ray instance of the user on the machine).
    """
    from pet.config.loader import load_config
    from pet.paths import pinned_paths

    cfg = load_config(config_path)
    log_path = log_path or state_file().with_name("serve.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The child must write serve.json where this process polls for it: it gets this process's folders in its
    # environment, and -P keeps a `pet` package in the working directory (another checkout) from shadowing ours.
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-P", "-m", "pet", "deploy", config_path, "--wait", str(wait_s)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **pinned_paths()})
    deadline = time.monotonic() + wait_s
    url = base_url(cfg)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pet deploy exited with code {proc.returncode}; see {log_path}")
        state = read_state()
        if state and state.get("pid") == proc.pid:
            return {**state, "log": str(log_path)}
        time.sleep(1.0)
    proc.terminate()
    raise TimeoutError(f"the gateway at {url} did not become healthy within {wait_s:.0f} s; see {log_path}")


def deploy(cfg: PetConfig, address: str | None = None, wait_s: float = 300.0, log: Any = print) -> dict[str, Any]:
    """Deploy the graph and wait until ``/healthz`` answers; returns the state written to serve.json."""
    from ray import serve

    from pet.serve.app import build_app, logging_config

    facts = start_ray(cfg, address)
    log(f"ray: connected ({facts['address']}); deploying application {cfg.serve.app_name!r} ...")
    if facts.get("note"):
        log(facts.pop("note"))
    serve.start(proxy_location=cfg.serve.proxy_location.value, http_options=http_options(cfg),
                logging_config=logging_config(cfg))
    t0 = time.monotonic()
    serve.run(build_app(cfg), name=cfg.serve.app_name, route_prefix=cfg.serve.route_prefix,
              logging_config=logging_config(cfg), blocking=False)
    url = base_url(cfg)
    wait_healthy(url, wait_s)
    remote = facts["address"] != "local"  # on a cluster the app outlives this process
    state = {**facts, "url": url, "pid": os.getpid(), "detached": remote, "app": cfg.serve.app_name,
             "ready_s": round(time.monotonic() - t0, 1)}
    direct = find_direct_url(cfg)
    if direct:
        state["direct_url"] = direct
    elif cfg.serve.http.direct_port is not None:
        log(f"direct ingress: no Gateway answers on ports {cfg.serve.http.direct_port}.."
            f"{cfg.serve.http.direct_port + DIRECT_PORT_SPAN - 1}; clients use the proxy at {url}")
    atomic_write_json(state_file(), state)
    return state


def find_direct_url(cfg: PetConfig, timeout_s: float = 10.0) -> str | None:
    """The first port of the direct-ingress range where this deployment's Gateway answers ``/healthz`` (its app
    name and proxy port identify it), or None."""
    import httpx

    if cfg.serve.http.direct_port is None:
        return None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for port in range(cfg.serve.http.direct_port, cfg.serve.http.direct_port + DIRECT_PORT_SPAN):
            url = _url(cfg, port)
            try:
                r = httpx.get(f"{url}/healthz", timeout=1.0, trust_env=False)
            except httpx.HTTPError:
                continue
            if r.status_code != 200 or not r.headers.get("content-type", "").startswith("application/json"):
                continue
            info = r.json()  # another deployment on this machine may own a port of the range: match ours
            if info.get("app") == cfg.serve.app_name and info.get("http_port") == cfg.serve.http.port:
                return url
        time.sleep(0.5)
    return None


def wait_healthy(url: str, timeout_s: float = 300.0) -> None:
    """Poll ``GET /healthz`` until it answers 200 (raises TimeoutError)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the gateway at {url} did not become healthy within {timeout_s:.0f} s")


def block_until_signal(on_stop: Any, on_reload: Any = None) -> None:
    """Sleep until SIGINT/SIGTERM, then call ``on_stop`` once; on SIGHUP call ``on_reload`` (in this thread)."""
    flags = {"stop": False, "reload": False}

    def handler(signum: int, frame: Any) -> None:
        flags["stop"] = True

    def reload(signum: int, frame: Any) -> None:
        flags["reload"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    if on_reload is not None:
        signal.signal(signal.SIGHUP, reload)
    try:
        while not flags["stop"]:
            if flags["reload"]:
                flags["reload"] = False
                on_reload()
            time.sleep(0.5)
    finally:
        on_stop()


def rollout(cfg: PetConfig, wait_s: float = 300.0, log: Any = print) -> dict[str, Any]:
    """Update the running application in place to ``cfg`` (from a process connected to its Ray).

    Serve replaces only the deployments whose arguments changed; a new T version in force (``pet traditional
    use``) changes T's, so its new replicas start while the old ones drain their requests. Returns when a T
    replica serves the expected model: ``{"model", "seconds"}``.
    """
    from ray import serve

    from pet.serve.app import build_app, logging_config
    from pet.traditional.versions import in_force

    t0 = time.monotonic()
    expected = in_force(cfg).path.name
    log(f"rolling out: T {expected} ...")
    serve.run(build_app(cfg), name=cfg.serve.app_name, route_prefix=cfg.serve.route_prefix,
              logging_config=logging_config(cfg), blocking=False)
    handle = serve.get_deployment_handle("Traditional", app_name=cfg.serve.app_name)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if handle.stats.remote().result(timeout_s=30).get("model") == expected:
            log(f"rolled out: T {expected} serves ({time.monotonic() - t0:.0f} s)")
            return {"model": expected, "seconds": round(time.monotonic() - t0, 1)}
        time.sleep(0.5)
    raise TimeoutError(f"T {expected} did not take over within {wait_s:.0f} s")


def request_rollout(cfg: PetConfig, address: str | None = None) -> str:
    """Make the running deployment serve ``cfg``'s T in force: SIGHUP to a local ``pet deploy`` (it re-reads its
    config and calls :func:`rollout`), or a rollout on the cluster at ``address`` / the recorded one."""
    pid, addr = _recorded_deployment(address)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        return f"asked pet deploy (pid {pid}) to roll out; `pet status` shows the T version in force"
    import ray

    _connect(addr)
    try:
        done = rollout(cfg)
    finally:
        ray.shutdown()
    return f"rolled out T {done['model']} on {addr} in {done['seconds']} s"


def stop_local(app_name: str | None = None, graceful: bool = True) -> None:
    """Shut Serve and Ray down from the process that deployed them.

    ``graceful=False`` skips Serve's own shutdown (replicas draining, a controller that often misses its 30 s
    deadline) and stops the local Ray at once: for callers with nothing left in flight (``pet demo``).
    """
    import ray
    from ray import serve

    try:
        if ray.is_initialized() and graceful:  # serve.shutdown() would otherwise start a fresh Ray to find nothing
            serve.shutdown()
    finally:
        ray.shutdown()
        try:
            state_file().unlink()
        except OSError:
            pass


def shutdown(address: str | None = None, timeout_s: float = 60.0) -> str:
    """Stop the last deployment: signal its blocking ``pet deploy`` or shut Serve down on its cluster."""
    pid, addr = _recorded_deployment(address)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _alive(pid):
            raise TimeoutError(f"pet deploy (pid {pid}) did not stop within {timeout_s:.0f} s")
        return f"stopped pet deploy (pid {pid})"
    import ray
    from ray import serve

    _connect(addr)
    serve.shutdown()
    ray.shutdown()
    try:
        state_file().unlink()
    except OSError:
        pass
    return f"Serve shut down on {addr}"


def _recorded_deployment(address: str | None) -> tuple[int | None, str]:
    """(pid of the blocking local ``pet deploy`` to signal, "") or (None, the Ray address of a cluster deployment)."""
    state = read_state() or {}
    pid = state.get("pid")
    if pid and not state.get("detached") and _alive(pid) and pid != os.getpid():
        return pid, ""
    addr = address or (state.get("address") if state.get("detached") else None)
    if addr is None:
        raise RuntimeError(f"no running deployment is recorded in {state_file()} (a deployment started with another "
                           "PET_HOME or from another folder records elsewhere); pass --address to reach a Ray cluster")
    return None, addr


def _connect(address: str) -> None:
    _quiet_env()
    import ray

    ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
