"""``pet chat``: talk to the personal model on this device, escalating to the gateway when the router says so.

    pet chat --bundle models/bundles/smollm2-int8 --url http://127.0.0.1:8000
    pet chat --bundle B --url URL "How do I read a file line by line in Python?"   # one question
    pet chat --bundle B --url URL --json "..."                                      # machine-readable

Each answer is printed with the tier that answered and why (calibrated confidence vs threshold, gateway
fallbacks, or "degraded" when the gateway was unreachable or slow and P answered instead).

    pet chat --bundle B --url URL --user alice --share-profile --store ~/.pet/store --key-file ~/.pet/device.key

``--share-profile`` (or ``questioner.share: true`` in this device's config, or ``pet store share-profile ... on``
for the user's store; all off by default) attaches a questioner
profile made from the user's encrypted store to every escalated request, inside the same sealed envelope, so E
and T answer this user; the answer line says how many bytes were shared. See docs/questioner.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from pet.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``chat`` command."""
    p = sub.add_parser("chat", help="chat with P on the device; escalate to the gateway when needed")
    p.add_argument("prompt", nargs="*", help="one question (omit for an interactive session)")
    p.add_argument("--bundle", default=None, help="device bundle folder (default: personal.bundle of the config)")
    p.add_argument("--url", default=None, help="gateway URL, e.g. http://127.0.0.1:8000 (omit: device only)")
    p.add_argument("--config", default=None, help="deployment YAML (router policy, calibration, timeouts)")
    p.add_argument("--user", default="device", help="user id sent to the gateway (for metering)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--connect-timeout", type=float, default=None, help="seconds (overrides router.connect_timeout_s)")
    p.add_argument("--read-timeout", type=float, default=None, help="seconds (overrides router.read_timeout_s)")
    p.add_argument("--json", action="store_true", help="print each answer as one JSON line")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="development only: run a device bundle that carries no signature")
    p.add_argument("--runtime", choices=("ort", "genai"), default=None,
                   help="device runtime: ort (pet's loop over onnxruntime) or genai (onnxruntime-genai); "
                        "default: pet.personal.runtime.DEFAULT_RUNTIME")
    p.add_argument("--share-profile", action="store_true",
                   help="opt in: send a questioner profile from --store with escalated requests (off by default)")
    p.add_argument("--store", default=None, help="encrypted store folder the profile is made from")
    p.add_argument("--key-file", default=None, help="the store's key file (or set the passphrase variable)")
    p.add_argument("--passphrase-env", default="PET_STORE_PASSPHRASE",
                   help="environment variable holding the store's passphrase")
    p.set_defaults(func=_chat)


def _questioner(args: argparse.Namespace, cfg) -> object | None:
    """The profile builder when the user opted in (flag, config or the store's choice), else None: nothing shared."""
    from pet.cli.personalize import _guard, _open_store

    opted_in = args.share_profile or cfg.questioner.share
    try:
        store = _open_store(args, cfg) if args.store else None
    except CLIError:
        if opted_in:
            raise
        return None  # a store given without its key cannot have opted in
    if not opted_in and store is not None and args.user in store.users():
        opted_in = _guard(store.share_profile, args.user)  # `pet store share-profile ... on`
    if not opted_in:
        return None
    if store is None:
        raise CLIError("sharing a questioner profile needs --store (and --key-file or a passphrase)")
    from pet.models.embed import embedder_from_config
    from pet.questioner.profile import ProfileBuilder, ProfileError

    texts = _guard(store.texts, args.user)
    try:
        return ProfileBuilder(texts, embedder_from_config(cfg), cfg.questioner)
    except ProfileError as err:
        raise CLIError(str(err)) from None


def _show(ans, as_json: bool) -> None:
    if as_json:
        print(json.dumps(ans.to_dict()), flush=True)
        return
    from pet.demo import why

    label = ans.tier.upper() + (f":{ans.domain}" if ans.domain else "") + (" degraded" if ans.degraded else "")
    tokens = sum(int(v) for v in (ans.usage or {}).values())
    print(f"[{label}] {ans.text.strip()}")
    print(f"    why: {why(ans)}  ({ans.latency_ms:.0f} ms, {tokens} tok, router {ans.router_ms:.2f} ms"
          f"{', encrypted' if ans.encrypted else ''}"
          f"{f', shared a {ans.shared_bytes}-byte questioner profile' if ans.shared_bytes else ''})", flush=True)


def _chat(args: argparse.Namespace) -> int:
    from pet.config.loader import load_config
    from pet.personal.bundle.default import resolve_bundle
    from pet.personal.device import DeviceClient

    cfg = load_config(args.config)
    if args.connect_timeout is not None:
        cfg.router.connect_timeout_s = args.connect_timeout
    if args.read_timeout is not None:
        cfg.router.read_timeout_s = args.read_timeout
    bundle = args.bundle or resolve_bundle(cfg)
    if not bundle:
        raise CLIError("no bundle: pass --bundle or set personal.bundle in the config")
    from pet.personal.bundle.sign import trusted_public_key_path
    from pet.personal.runtime import BundleError, load_model

    try:
        personal = load_model(bundle, runtime=args.runtime, num_threads=cfg.personal.num_threads,
                              public_key=trusted_public_key_path(cfg), allow_unsigned=args.allow_unsigned)
    except BundleError as err:
        raise CLIError(str(err)) from None
    try:
        client = DeviceClient.from_config(cfg, personal, args.url, user_id=args.user,
                                          questioner=_questioner(args, cfg))
    except ValueError as err:
        raise CLIError(str(err)) from None
    if args.prompt:
        _show(client.ask(" ".join(args.prompt), args.max_new_tokens), args.json)
        return 0
    if sys.stdin.isatty():
        print("pet chat: type a question, empty line or Ctrl-D to quit", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        _show(client.ask(line.strip(), args.max_new_tokens), args.json)
    return 0
