"""``pet demo [FILE]``: the main job end to end -- the whole P -> E -> T hierarchy on this machine.

Prepares what the default configuration needs (keys, the starter experts, the signed default device bundle;
all reused when present), deploys the Serve graph on a local Ray, runs the scripted session of
:mod:`pet.demo` through the device client (P on the device with onnxruntime, escalations HPKE-encrypted to
the gateway), prints one line per query and the summary, and shuts everything down.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
import uuid

from pet.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    p = sub.add_parser("demo", help="the P -> E -> T hierarchy end to end: prepare, deploy, a scripted session, "
                                    "summary, shut down")
    p.add_argument("file", nargs="?", default=None, help="YAML file (default: deployments/default.yaml)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the session and summary as JSON")
    p.set_defaults(func=_demo)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _demo(args: argparse.Namespace) -> int:
    from pet.config.loader import load_config
    from pet.demo import SESSION, ledger_rows, run_session, summarize, summary_table
    from pet.hierarchy import prepare_hierarchy
    from pet.ledger import Ledger
    from pet.personal.bundle.sign import trusted_public_key_path
    from pet.personal.device import DeviceClient
    from pet.personal.runtime import BundleError, load_model
    from pet.serve.cluster import free_port
    from pet.serve.control import deploy, stop_local

    cfg = load_config(args.file)
    if not _port_free(cfg.serve.http.host, cfg.serve.http.port):
        port = free_port()
        print(f"demo: port {cfg.serve.http.port} is taken; using {port}")
        cfg.serve.http.port = port
    t0 = time.monotonic()
    print("demo: preparing the hierarchy (keys, starter experts, device bundle) ...", flush=True)
    try:
        ready = prepare_hierarchy(cfg, log=lambda m: print(f"demo: {m}", flush=True))
        personal = load_model(ready.bundle, num_threads=cfg.personal.num_threads,
                              public_key=trusted_public_key_path(cfg))
    except (BundleError, FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    print(f"demo: P = {ready.bundle.name} ({type(personal).__name__}); E = {', '.join(ready.experts) or 'none'}; "
          f"router calibration {ready.calibration}")
    print("demo: starting Ray and deploying Traditional, ExpertPool and Gateway (loads SmolLM2 twice) ...", flush=True)
    user = f"demo-{uuid.uuid4().hex[:8]}"
    try:
        state = deploy(cfg, log=lambda m: print(f"demo: {m}"))
        url = state.get("direct_url") or state["url"]
        print(f"demo: graph ready at {url} in {time.monotonic() - t0:.0f} s; the session (user {user}):\n")
        client = DeviceClient.from_config(cfg, personal, url, user_id=user)
        turns = run_session(client, SESSION, args.max_new_tokens)
        escalations = sum(t.answer.tier in ("e", "t") for t in turns)
        summary = summarize(turns, ledger_rows(Ledger.from_config(cfg), user, escalations))
        print("\n" + summary_table(summary))
        if args.json:
            from pet.io import atomic_write_text

            doc = {"user": user, "summary": summary,
                   "turns": [{"kind": t.kind, "prompt": t.prompt, **t.answer.to_dict()} for t in turns]}
            atomic_write_text(args.json, json.dumps(doc, indent=1))
    finally:
        print("\ndemo: shutting down ...", flush=True)
        stop_local(cfg.serve.app_name, graceful=False)  # the session is over: nothing is in flight
    print(f"demo: done in {time.monotonic() - t0:.0f} s")
    return 0
