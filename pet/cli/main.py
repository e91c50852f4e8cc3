"""Entry point of the ``pet`` console script.

Command groups are discovered from the modules of :mod:`pet.cli` (each defines ``register``), so adding a
command means adding a module, not editing a switch.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import pet
from pet.cli import CLIError


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every discovered command group."""
    from pet.paths import layout

    parser = argparse.ArgumentParser(
        prog="pet",
        description="Hierarchical P-E-T language-model orchestration: personal (device), expert and "
                    "traditional (cloud, Ray Serve) models with a P -> E -> T router.",
        epilog=f"Folders: {layout().describe()}. Set PET_HOME to keep both elsewhere (models in $PET_HOME/models, "
               "state in $PET_HOME/state).",
    )
    parser.add_argument("--version", action="version", version=f"pet {pet.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import pet.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name == "main" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"pet.cli.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, dispatch, and turn user errors into exit code 2 without a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from pet.config.loader import ConfigError
    from pet.models.prepare import MissingPackageError

    try:
        rc = args.func(args)
    except ConfigError as err:
        print(f"pet: invalid configuration\n{err}", file=sys.stderr)
        return 2
    except (CLIError, MissingPackageError, FileNotFoundError, FileExistsError) as err:
        print(f"pet: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pet: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
