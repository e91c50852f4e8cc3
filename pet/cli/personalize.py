"""``pet personalize`` (per-user LoRA with cloud augmentation) and ``pet store ...`` (the encrypted store).

    pet store keygen --out ~/.pet/device.key
    pet store add --store ~/.pet/store --key-file ~/.pet/device.key --user alice --file chats.jsonl
    pet store list|export|delete --store ~/.pet/store --key-file ~/.pet/device.key --user alice ...
    pet store share-profile --store ~/.pet/store --key-file ~/.pet/device.key --user alice on|off|status
    pet personalize --user alice --store ~/.pet/store --key-file ~/.pet/device.key --share 0.3 \\
        --synthetic 32 --url http://127.0.0.1:8000 --out bundles/alice

Store keys come from ``--key-file`` or a passphrase in an environment variable (``--passphrase-env``,
default ``PET_STORE_PASSPHRASE``); a passphrase is never taken on the command line, where ``ps`` shows it.
Without ``--url`` the Augmenter runs in this process (T and MiniLM loaded locally).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pet.cli import CLIError

PASSPHRASE_ENV = "PET_STORE_PASSPHRASE"


def _key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="store folder (one encrypted file per user)")
    p.add_argument("--key-file", default=None, help="32-byte key file (pet store keygen)")
    p.add_argument("--passphrase-env", default=PASSPHRASE_ENV,
                   help=f"environment variable holding the passphrase (default {PASSPHRASE_ENV})")
    p.add_argument("--config", default=None, help="YAML config (default: deployments/default.yaml)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``personalize`` command and the ``store`` group."""
    p = sub.add_parser("personalize", help="fine-tune a personal P model (LoRA) on a user's data + synthetic data")
    p.add_argument("--user", required=True, help="user id")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="data file: .jsonl / .json messages, or text with one message per line")
    src.add_argument("--store", help="encrypted store folder (needs --key-file or a passphrase)")
    p.add_argument("--key-file", default=None)
    p.add_argument("--passphrase-env", default=PASSPHRASE_ENV)
    p.add_argument("--share", type=float, required=True, help="fraction in [0, 1] of messages sent to the cloud")
    p.add_argument("--share-filter", default=None, help="only messages matching this regex may be shared")
    p.add_argument("--synthetic", type=int, default=None, help="synthetic samples to ask for (config default)")
    p.add_argument("--url", default=None, help="gateway URL (omit: run the Augmenter in this process)")
    p.add_argument("--out", required=True, help="device bundle folder to write")
    p.add_argument("--base-model", default=None, help="P model folder to fine-tune (default: config)")
    p.add_argument("--steps", type=int, default=None, help="LoRA steps (default: config)")
    p.add_argument("--keep-model", default=None, help="also keep the merged HF model folder here")
    p.add_argument("--replace", action="store_true", help="replace an existing bundle atomically")
    p.add_argument("--config", default=None, help="YAML config (default: deployments/default.yaml)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_personalize)

    s = sub.add_parser("store", help="the encrypted on-device store of personal texts")
    ss = s.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    kg = ss.add_parser("keygen", help="create a random 32-byte key file (mode 0600)")
    kg.add_argument("--out", required=True)
    kg.set_defaults(func=_keygen)
    add = ss.add_parser("add", help="append texts for a user (creates the user's store)")
    _key_args(add)
    add.add_argument("--user", required=True)
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="one message")
    what.add_argument("--file", help="a data file (same formats as pet personalize --data)")
    add.set_defaults(func=_add)
    ls = ss.add_parser("list", help="list a user's records (id, created, length), or the users")
    _key_args(ls)
    ls.add_argument("--user", default=None, help="omit to list the users")
    ls.set_defaults(func=_list)
    rm = ss.add_parser("delete", help="delete one record, or a user's whole store with --all")
    _key_args(rm)
    rm.add_argument("--user", required=True)
    which = rm.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", help="record id")
    which.add_argument("--all", action="store_true")
    rm.set_defaults(func=_delete)
    ex = ss.add_parser("export", help="decrypt a user's records to a JSON-lines file")
    _key_args(ex)
    ex.add_argument("--user", required=True)
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=_export)
    sp = ss.add_parser("share-profile", help="opt this device in or out of sending questioner profiles "
                                             "(docs/questioner.md; off until turned on)")
    _key_args(sp)
    sp.add_argument("--user", required=True)
    sp.add_argument("state", choices=("on", "off", "status"), help="turn sharing on or off, or show it")
    sp.set_defaults(func=_share_profile)


# ----------------------------------------------------------------------------------------------------------------


def _config(path: str | None) -> Any:
    from pet.config.loader import load_config

    return load_config(path)


def _open_store(args: argparse.Namespace, cfg: Any) -> Any:
    from pet.personal.personalize.store import PersonalStore, StoreError, StoreKey

    try:
        if args.key_file:
            key = StoreKey.from_file(args.key_file)
        elif os.environ.get(args.passphrase_env):
            key = StoreKey.from_passphrase(os.environ[args.passphrase_env], cfg.personalization.scrypt_n)
        else:
            raise CLIError(f"give --key-file or set the passphrase in ${args.passphrase_env}")
    except StoreError as err:
        raise CLIError(str(err)) from None
    return PersonalStore(args.store, key, cfg.personalization.max_data_bytes)


def _guard(fn: Any, *a: Any, **kw: Any) -> Any:
    from pet.personal.personalize.store import StoreError

    try:
        return fn(*a, **kw)
    except StoreError as err:
        raise CLIError(str(err)) from None


def _keygen(args: argparse.Namespace) -> int:
    from pet.personal.personalize.store import StoreKey

    print(f"key written to {StoreKey.generate(args.out)} (keep it secret; losing it loses the store)")
    return 0


def _add(args: argparse.Namespace) -> int:
    from pet.personal.personalize.data import load_data_file

    cfg = _config(args.config)
    store = _open_store(args, cfg)
    items: Any = args.text if args.text is not None else _guard(
        load_data_file, args.file, cfg.personalization.max_data_bytes)
    ids = _guard(store.append, args.user, items)
    print(f"added {len(ids)} record(s) for {args.user}; the store holds {len(_guard(store.records, args.user))}")
    return 0


def _list(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    store = _open_store(args, cfg)
    if args.user is None:
        users = store.users()
        print("\n".join(users) if users else f"no users in {store.root}")
        return 0
    records = _guard(store.records, args.user)
    print(f"{'id':<14} {'created':<21} {'chars':>6}  context")
    for r in records:
        print(f"{r['id']:<14} {r['created']:<21} {len(r['text']):>6}  {len(r.get('context') or [])}")
    print(f"{len(records)} record(s)")
    return 0


def _delete(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    n = _guard(_open_store(args, cfg).delete, args.user, None if args.all else args.id)
    print(f"deleted {n} record(s) of {args.user}")
    return 0


def _export(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    out = _guard(_open_store(args, cfg).export, args.user, args.out)
    print(f"wrote {out} (plaintext: protect it)")
    return 0


def _share_profile(args: argparse.Namespace) -> int:
    store = _open_store(args, _config(args.config))
    if args.state != "status":
        _guard(store.set_share_profile, args.user, args.state == "on")
    on = _guard(store.share_profile, args.user)
    print(f"questioner profiles for {args.user}: {'shared with escalated requests' if on else 'not shared'}")
    return 0


def _personalize(args: argparse.Namespace) -> int:
    from pet.personal.personalize.data import load_data_file
    from pet.personal.personalize.store import check_user

    cfg = _config(args.config)
    _guard(check_user, args.user)
    if args.steps is not None and args.steps < 1:
        raise CLIError("--steps must be >= 1")
    pcfg = cfg.personalization.updated(steps=args.steps)
    cfg = cfg.model_copy(update={"personalization": pcfg})
    if args.data:
        records = _guard(load_data_file, args.data, pcfg.max_data_bytes)
    else:
        records = _guard(_open_store(args, cfg).records, args.user)
    client = None
    if args.url:
        from pet.personal.personalize.client import HttpAugmentClient

        client = HttpAugmentClient(args.url, args.user)
    from pet.client import GatewayError
    from pet.personal.personalize.pipeline import personalize

    def say(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    try:
        report = _guard(personalize, cfg, args.user, records, args.share, args.out, share_filter=args.share_filter,
                        synthetic=args.synthetic, client=client, base_model=args.base_model, replace=args.replace,
                        model_out=args.keep_model, say=say)
    except GatewayError as err:
        raise CLIError(f"augmentation failed: {err}") from None
    except RuntimeError as err:  # ExportError: the message names the failed export step
        if type(err).__name__ != "ExportError":
            raise
        raise CLIError(f"export failed: {err}") from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"user {report.user}: {report.messages} messages, {report.shared} shared, "
          f"{report.synthetic_received}/{report.synthetic_requested} synthetic samples kept")
    t = report.train
    print(f"LoRA: {t['steps']} steps, loss {t['loss_first']:.3f} -> {t['loss_last']:.3f}")
    print(f"bundle: {report.bundle}  ({', '.join(f'{k} {v:.1f} s' for k, v in report.seconds.items())})")
    return 0
