"""``pet deploy | build | status | shutdown | ask``: run the cloud side (Ray Serve) and talk to it.

    pet deploy deployments/default.yaml            # local Ray, HTTP on 127.0.0.1:8000, blocks until Ctrl-C
    pet deploy deployments/dev.yaml --detach       # keeps running in a background process after the command exits
    pet build deployments/default.yaml -o serve_config.yaml && serve run serve_config.yaml
    pet status ; pet ask "What is a bond?" --tier auto ; pet shutdown
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pet.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the serving commands."""
    p = sub.add_parser("deploy", help="validate a YAML file and deploy the Serve graph (T, E, gateway)")
    p.add_argument("file", help="deployment YAML (e.g. deployments/default.yaml)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to deploy on: ray://host:10001, 'auto' (a running `ray start` head); "
                        "default: a new local instance")
    p.add_argument("--detach", action="store_true",
                   help="return once the graph is healthy; it keeps running (locally in a background process)")
    p.add_argument("--wait", type=float, default=600.0, help="seconds to wait for the gateway to be healthy")
    p.set_defaults(func=_deploy)

    p = sub.add_parser("build", help="write a Serve config that Ray's `serve deploy`/`serve run` accept")
    p.add_argument("file", help="deployment YAML")
    p.add_argument("-o", "--output", default="serve_config.yaml", help="output file (default: serve_config.yaml)")
    p.add_argument("--inline", action="store_true", help="embed the pet config instead of referencing FILE")
    p.set_defaults(func=_build)

    p = sub.add_parser("status", help="deployments, replicas, health and loaded adapters of the running graph")
    p.add_argument("--url", default=None, help="gateway URL (default: the last `pet deploy`, else the config's)")
    p.add_argument("--config", default=None, help="YAML file whose serve.http settings give the URL")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_status)

    p = sub.add_parser("shutdown", help="stop the graph started by `pet deploy`")
    p.add_argument("--address", default=None, help="Ray cluster to shut Serve down on (default: the recorded one)")
    p.set_defaults(func=_shutdown)

    p = sub.add_parser("ask", help="send one prompt to the gateway and print answer, tier, confidence, latency")
    p.add_argument("prompt")
    p.add_argument("--tier", choices=["t", "e", "auto"], default="auto")
    p.add_argument("--domain", default=None, help="expert domain (tier e/auto)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--user", default="pet-cli", help="user id sent with encrypted requests")
    p.add_argument("--url", default=None, help="gateway URL (default: the last `pet deploy`, else the config's)")
    p.add_argument("--config", default=None, help="YAML file whose serve.http settings give the URL")
    p.add_argument("--json", action="store_true", help="print the raw response JSON")
    p.set_defaults(func=_ask)


def resolve_url(url: str | None, config: str | None) -> str:
    """The gateway URL: explicit, else the last deployment's, else the config's serve.http."""
    if url:
        return url.rstrip("/")
    from pet.serve.control import base_url, read_state

    state = read_state()
    if state and state.get("url") and not config:
        return state.get("direct_url") or state["url"]  # direct ingress skips Serve's proxy hop
    from pet.config.loader import load_config

    return base_url(load_config(config))


def _deploy(args: argparse.Namespace) -> int:
    from pet.config.loader import load_config

    cfg = load_config(args.file)  # validated before anything starts
    print(f"{args.file}: valid")
    from pet.security.keys import ensure_keys

    ensure_keys(cfg)
    from pet.serve.control import block_until_signal, deploy, spawn_detached, stop_local

    t0 = time.monotonic()
    local = args.address in (None, "local")
    try:
        if args.detach and local:
            state = spawn_detached(args.file, wait_s=args.wait)
        else:
            state = deploy(cfg, address=args.address, wait_s=args.wait)
    except (TimeoutError, RuntimeError) as err:
        raise CLIError(str(err)) from None
    print(f"pet: serving {cfg.serve.app_name!r} at {state['url']} (ready in {time.monotonic() - t0:.0f} s)")
    if state.get("direct_url"):
        print(f"pet: direct ingress (no proxy hop) at {state['direct_url']}")
    if not cfg.crypto.allow_plaintext:
        print("pet: plaintext refused; clients encrypt to GET /v1/keys (`pet ask` does)")
    if args.detach or not local:
        where = f"pid {state['pid']}, log {state['log']}" if "log" in state else f"cluster {state['address']}"
        print(f"pet: detached ({where}); stop it with `pet shutdown`")
        return 0
    print("pet: press Ctrl-C (or run `pet shutdown`) to stop")
    block_until_signal(lambda: (print("pet: shutting down ..."), stop_local(cfg.serve.app_name)),
                       on_reload=lambda: _reload(args.file))
    print("pet: stopped")
    return 0


def _reload(path: str) -> None:
    """SIGHUP (``pet traditional use|rollback --rollout``): re-read the config and roll the graph out in place."""
    from pet.config.loader import ConfigError, load_config
    from pet.serve.control import rollout

    try:
        rollout(load_config(path), log=lambda m: print(f"pet: {m}", flush=True))
    except (ConfigError, TimeoutError, RuntimeError, ValueError) as err:  # the graph keeps serving what it had
        print(f"pet: rollout failed: {err}", flush=True)


def _build(args: argparse.Namespace) -> int:
    import yaml

    from pet.config.loader import load_config
    from pet.io import atomic_write_text
    from pet.serve.app import serve_config, validate_serve_config

    cfg = load_config(args.file)
    data = serve_config(cfg, args.file, inline=args.inline)
    validate_serve_config(data)
    header = (f"# Ray Serve config written by `pet build {args.file}`; deploy with `serve deploy {args.output}`\n"
              f"# (on a running cluster) or `serve run {args.output}`. The pet YAML is the source of truth.\n")
    from pet.serve.control import env_assignments, serve_env

    # Serve reads these when its processes start: the cluster's `ray start` must have them (the body guard
    # in front of Serve's admission, serve.http.direct_port, serve.throughput_optimized).
    header += f"# start the cluster's Ray with\n#   {env_assignments(serve_env(cfg))} ray start ...\n"
    atomic_write_text(args.output, header + yaml.safe_dump(data, sort_keys=False))
    print(args.output)
    return 0


def _status(args: argparse.Namespace) -> int:
    from pet.client import GatewayClient, GatewayError
    from pet.serve.status import placement_lines

    url = resolve_url(args.url, args.config)
    try:
        st = GatewayClient(url, read_timeout_s=30).status()
    except GatewayError as err:
        raise CLIError(f"{url}: {err}" if err.status else f"no gateway answers at {url} ({err})") from None
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"application {st['app']}: {st['status']}   ({url})")
    print(f"  {'deployment':<14}{'status':<12}replicas")
    for name, d in st["deployments"].items():
        reps = ", ".join(f"{k.lower()} {v}" for k, v in d["replicas"].items()) or "-"
        print(f"  {name:<14}{d['status']:<12}{reps}")
        for line in placement_lines(d.get("placement", [])):
            print(f"      {line}")
    ex = st.get("experts", {})
    names = [e["name"] for e in ex.get("experts", [])]
    print(f"  experts registered: {', '.join(names) or 'none'}")
    for replica, loaded in ex.get("loaded_adapters", {}).items():
        print(f"  adapters loaded on {replica}: {', '.join(loaded) or 'none'}")
    t = st.get("traditional")
    if t:
        extra = f", merged {','.join(t['experts'])} into {t['parent']} ({t['method']})" if t.get("experts") else ""
        print(f"  T version: {t['model']} ({t.get('source', '?')}{extra}); replica has {t.get('replica_model')}")
    r = st.get("router")
    if r:
        print(f"  router: {r['policy']}, calibration {r['calibration']}, P threshold {r['p_threshold']:.3f}, "
              f"E threshold {r['e_threshold']:.3f}, domain floor {r['domain_floor']}")
    return 0


def _shutdown(args: argparse.Namespace) -> int:
    from pet.serve.control import shutdown

    try:
        print(f"pet: {shutdown(args.address)}")
    except (RuntimeError, TimeoutError) as err:
        raise CLIError(str(err)) from None
    return 0


def _ask(args: argparse.Namespace) -> int:
    from pet.client import GatewayClient, GatewayError

    url = resolve_url(args.url, args.config)
    payload = {"prompt": args.prompt, "tier": args.tier}
    for key in ("domain", "max_new_tokens", "temperature"):
        if getattr(args, key) is not None:
            payload[key] = getattr(args, key)
    try:
        out = GatewayClient(url, user=args.user).generate(payload)
    except GatewayError as err:
        if err.status is None:
            raise CLIError(f"no gateway answers at {url} ({err}); is `pet deploy` running?") from None
        raise CLIError(str(err)) from None
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print_answer(out, file=sys.stdout)
    return 0


def print_answer(out: dict, prompt: str | None = None, file=sys.stdout) -> None:
    """A person-readable answer: text, tier (and why), confidence and latency."""
    tier = out["tier"].upper() + (f" ({out['domain']})" if out.get("domain") and out["tier"] == "e" else "")
    extra = f", fallback: {out['fallback_reason']}" if out.get("fallback") else ""
    path = " -> ".join(t.upper() for t in out.get("escalation", []))
    s, u = out["signals"], out["usage"]
    if prompt is not None:
        print(f"> {prompt}", file=file)
    print(out["text"].strip(), file=file)
    print(f"  [tier {tier}; tried {path}{extra}] confidence: mean logprob {s['mean_logprob']:.2f}, "
          f"min p {s['min_token_prob']:.2f}; {u['prompt_tokens']}+{u['completion_tokens']} tokens; "
          f"{out['latency_ms']:.0f} ms", file=file)
