"""``pet ledger show|export``: per-user, per-tier usage, cost and rewards from the metering ledger."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``ledger`` command group."""
    p = sub.add_parser("ledger", help="show or export metered usage, cost and contribution rewards")
    ls = p.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    for name, helptext in (("show", "print a table per user and tier"), ("export", "write the ledger as CSV")):
        c = ls.add_parser(name, help=helptext)
        c.add_argument("--config", default=None, help="YAML config (default: deployments/default.yaml)")
        c.add_argument("--ledger", default=None, help="ledger file (default: ledger.path of the config)")
        c.add_argument("--user", default=None, help="only this user")
        c.add_argument("--since", default=None, help="only events at or after DATE (YYYY-MM-DD[THH:MM], UTC)")
        if name == "export":
            c.add_argument("--csv", action="store_true", required=True, help="CSV output (the only format)")
            c.add_argument("--summary", action="store_true", help="per-user, per-tier totals instead of events")
            c.add_argument("--out", default=None, help="write to FILE (atomically) instead of stdout")
        c.set_defaults(func=_show if name == "show" else _export)


def _open(args: argparse.Namespace):
    from pathlib import Path

    from pet.cli import CLIError
    from pet.config.loader import load_config
    from pet.ledger import Ledger, LedgerError
    from pet.ledger.ledger import default_ledger_path
    from pet.ledger.report import parse_since

    cfg = load_config(args.config)
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as err:
        raise CLIError(str(err)) from None
    path = Path(args.ledger or cfg.ledger.path or default_ledger_path(cfg.models_dir)).expanduser()
    if not path.exists():
        # reading must not create an empty ledger somewhere unexpected
        raise CLIError(f"no ledger at {path} (nothing metered yet, or pass --ledger FILE)")
    try:
        led = Ledger(path, cfg.ledger.prices, cfg.ledger.reward_per_sample,
                     busy_timeout_s=cfg.ledger.busy_timeout_s, synchronous=cfg.ledger.synchronous)
    except LedgerError as err:
        raise CLIError(str(err)) from None
    return led, since, path


def _show(args: argparse.Namespace) -> int:
    from pet.cli import CLIError
    from pet.ledger import LedgerError
    from pet.ledger.report import format_table

    led, since, path = _open(args)
    try:
        rows = led.summary(user=args.user, since=since)
    except LedgerError as err:
        raise CLIError(str(err)) from None
    print(f"ledger {path}" + (f" since {args.since}" if args.since else ""))
    print(format_table(rows))
    return 0


def _export(args: argparse.Namespace) -> int:
    from pet.cli import CLIError
    from pet.io import atomic_write_text
    from pet.ledger import LedgerError
    from pet.ledger.report import events_csv, summary_csv

    led, since, _ = _open(args)
    try:
        if args.summary:
            text = summary_csv(led.summary(user=args.user, since=since))
        else:
            text = events_csv(led.events(user=args.user, since=since))
    except LedgerError as err:
        raise CLIError(str(err)) from None
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out} ({text.count(chr(10)) - 1} rows)")
    else:
        print(text, end="")
    return 0
