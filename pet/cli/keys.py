"""``pet keys init|rotate|list|sign-bundle|verify-bundle``: the key service's keys folder and bundle signatures.

Private keys are created with mode 0600 and never printed; ``list`` shows ids, suites, status and dates only.
"""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``keys`` command group."""
    p = sub.add_parser("keys", help="HPKE request keys and the bundle-signing key (init, rotate, list, sign)")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    for name, helptext, func in (
        ("init", "create the first HPKE key pair and the Ed25519 bundle-signing key", _init),
        ("rotate", "make a new current key; the old one stays valid for crypto.key_grace_period_s", _rotate),
        ("list", "list key ids, suites and status (no private material)", _list),
    ):
        c = ks.add_parser(name, help=helptext)
        c.add_argument("--config", default=None, help="YAML file (default: deployments/default.yaml)")
        c.add_argument("--dir", default=None, help="keys folder (overrides crypto.keys_dir)")
        c.set_defaults(func=func)
    s = ks.add_parser("sign-bundle", help="sign a device bundle's bundle.json with the signing key")
    s.add_argument("bundle", help="bundle folder")
    s.add_argument("--config", default=None)
    s.add_argument("--dir", default=None, help="keys folder holding signing.key")
    s.set_defaults(func=_sign)
    v = ks.add_parser("verify-bundle", help="check a bundle's signature against a trusted public key")
    v.add_argument("bundle", help="bundle folder")
    v.add_argument("--public-key", default=None, help="signing.pub file (default: crypto.bundle_public_key or "
                                                      "<keys folder>/signing.pub)")
    v.add_argument("--config", default=None)
    v.add_argument("--dir", default=None)
    v.set_defaults(func=_verify)


def _ring(args: argparse.Namespace):  # -> tuple[PetConfig, KeyRing]
    from pet.config.loader import load_config
    from pet.security.keys import KeyRing, keys_dir_for

    cfg = load_config(args.config)
    return cfg, KeyRing(args.dir or keys_dir_for(cfg))


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


def _init(args: argparse.Namespace) -> int:
    from pet.cli import CLIError
    from pet.security.keys import KeyStoreError

    cfg, ring = _ring(args)
    try:
        rec = ring.init(cfg.crypto.suite.value)
    except KeyStoreError as err:
        raise CLIError(str(err)) from None
    print(f"created key {rec.kid} ({rec.suite}) in {ring.root}")
    print(f"bundle-signing public key: {ring.signing_public_key_path()}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from pet.cli import CLIError
    from pet.security.keys import KeyStoreError

    cfg, ring = _ring(args)
    try:
        old = ring.current()
        rec = ring.rotate(cfg.crypto.suite.value, grace_s=cfg.crypto.key_grace_period_s)
    except KeyStoreError as err:
        raise CLIError(str(err)) from None
    print(f"new current key {rec.kid} ({rec.suite})")
    if old is not None:
        print(f"previous key {old.kid} stays valid until {_when(time.time() + cfg.crypto.key_grace_period_s)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from pet.cli import CLIError
    from pet.security.keys import KeyStoreError

    cfg, ring = _ring(args)
    try:
        recs = ring.records()
    except KeyStoreError as err:
        raise CLIError(str(err)) from None
    if not recs:
        print(f"no keys in {ring.root}; run: pet keys init")
        return 0
    now, grace = time.time(), cfg.crypto.key_grace_period_s
    print(f"keys folder: {ring.root}")
    print(f"{'key id':<18} {'status':<9} {'created':<21} {'valid until':<21} suite")
    for r in sorted(recs, key=lambda r: r.created_at, reverse=True):
        print(f"{r.kid:<18} {r.status(now, grace):<9} {_when(r.created_at):<21} {_when(r.expires_at(grace)):<21} "
              f"{r.suite}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from pet.cli import CLIError
    from pet.personal.bundle.sign import BundleSignatureError, sign_bundle
    from pet.security.keys import KeyStoreError

    _, ring = _ring(args)
    try:
        entry = sign_bundle(args.bundle, ring)
    except (KeyStoreError, BundleSignatureError) as err:
        raise CLIError(str(err)) from None
    print(f"signed {args.bundle}/bundle.json with key {entry['key_id']}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from pet.cli import CLIError
    from pet.personal.bundle.sign import BundleSignatureError, trusted_public_key_path, verify_bundle

    cfg, ring = _ring(args)
    pub = args.public_key or (ring.signing_public_key_path() if args.dir else trusted_public_key_path(cfg))
    try:
        entry = verify_bundle(args.bundle, pub)
    except (BundleSignatureError, ValueError) as err:
        raise CLIError(str(err)) from None
    print(f"{args.bundle}: signature valid (key {entry['key_id']})")
    return 0
