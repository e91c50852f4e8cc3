"""``pet config check [FILE]`` and ``pet config show [FILE]`` (no file: the default configuration)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``config`` command group."""
    p = sub.add_parser("config", help="validate and show configuration files")
    cs = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = cs.add_parser("check", help="validate a YAML file and print a summary")
    c.add_argument("file", nargs="?", default=None,
                   help="YAML file, e.g. deployments/default.yaml (default: the default configuration)")
    c.set_defaults(func=_check)
    s = cs.add_parser("show", help="print a file with every default filled in")
    s.add_argument("file", nargs="?", default=None, help="YAML file (default: the embedded default)")
    s.set_defaults(func=_show)


def _check(args: argparse.Namespace) -> int:
    from pet.config.loader import default_config_source, load_config
    from pet.hierarchy import summarize

    cfg = load_config(args.file)
    print(f"{args.file or default_config_source()}: valid")
    print(summarize(cfg))
    return 0


def _show(args: argparse.Namespace) -> int:
    from pet.config.loader import dump_config, load_config

    print(dump_config(load_config(args.file)), end="")
    return 0
