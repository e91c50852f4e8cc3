"""``pet demo [FILE]``: the main job end to end -- deploy the Serve graph locally, ask it a few real
questions over HTTP (T, E when a domain is registered, auto), print answers, tiers, confidence and latency,
then shut everything down. With ``crypto.allow_plaintext: false`` (the default) every request is sealed
with HPKE to the gateway's public key, exactly as a device would send it.
"""

from __future__ import annotations

import argparse
import socket
import time

DEMO_QUERIES = [
    ("t", None, "What is the capital of France?"),
    ("auto", None, "Give one tip for writing readable Python code."),
    ("auto", None, "What does a bond's yield mean?"),
]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    p = sub.add_parser("demo", help="deploy the graph locally, answer a few real queries, shut down")
    p.add_argument("file", nargs="?", default=None, help="YAML file (default: deployments/default.yaml)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.set_defaults(func=_demo)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _demo(args: argparse.Namespace) -> int:
    from pet.cli.serve import print_answer
    from pet.config.loader import load_config
    from pet.serve.client import GatewayClient, GatewayError
    from pet.serve.control import deploy, stop_local

    cfg = load_config(args.file)
    if not _port_free(cfg.serve.http.host, cfg.serve.http.port):
        port = _free_port()
        print(f"demo: port {cfg.serve.http.port} is taken; using {port}")
        cfg.serve.http.port = port
    try:
        from pet.security.keys import ensure_keys

        ensure_keys(cfg)
    except ImportError:
        pass
    t0 = time.monotonic()
    print("demo: starting Ray and deploying Traditional, ExpertPool and Gateway (loads SmolLM2 twice) ...")
    try:
        state = deploy(cfg, log=lambda m: print(f"demo: {m}"))
        print(f"demo: graph ready at {state['url']} in {time.monotonic() - t0:.0f} s")
        if state.get("direct_url"):
            print(f"demo: asking the Gateway replica directly at {state['direct_url']} (Serve direct ingress)")
        client = GatewayClient(state.get("direct_url") or state["url"], user="demo-user")
        print(f"demo: requests are {'HPKE-encrypted' if client.encrypts() else 'plaintext (dev mode)'}")
        domains = [e["name"] for e in client.experts()["experts"]]
        queries = list(DEMO_QUERIES)
        if domains:
            queries.insert(1, ("e", domains[0], f"Tell me something useful about {domains[0]}."))
        else:
            print("demo: no expert domain is registered (see `pet expert register`); auto answers from T")
        for tier, domain, prompt in queries:
            payload = {"prompt": prompt, "tier": tier, "max_new_tokens": args.max_new_tokens}
            if domain:
                payload["domain"] = domain
            print()
            try:
                print_answer(client.generate(payload), prompt=f"[{tier}] {prompt}")
            except GatewayError as err:
                print(f"> [{tier}] {prompt}\n  refused: {err}")
        client.close()
    finally:
        print("\ndemo: shutting down ...")
        stop_local(cfg.serve.app_name)
    print(f"demo: done in {time.monotonic() - t0:.0f} s")
    return 0
