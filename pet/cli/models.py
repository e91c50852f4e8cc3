"""``pet models prepare|hierarchy|list|verify``: the offline model folder and what the defaults need."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command group."""
    p = sub.add_parser("models", help="prepare and inspect the local model folder (offline)")
    ms = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    pr = ms.add_parser("prepare", help="convert the packaged SmolLM2 GGUF and resolve MiniLM (once)")
    pr.add_argument("--dir", default=None, help="models folder (default: $PET_MODELS_DIR, $PET_HOME/models, the "
                                                "checkout's models/ or the user data folder; see `pet --help`)")
    pr.add_argument("--force", action="store_true", help="redo the conversion even if prepared")
    pr.set_defaults(func=_prepare)
    hi = ms.add_parser("hierarchy", help="prepare what the default configuration runs: keys, the starter experts "
                                         "and the signed default device bundle (reused when present)")
    hi.add_argument("--config", default=None, help="YAML config (default: deployments/default.yaml)")
    hi.set_defaults(func=_hierarchy)
    ls = ms.add_parser("list", help="list prepared models")
    ls.add_argument("--dir", default=None)
    ls.set_defaults(func=_list)
    vf = ms.add_parser("verify", help="re-hash every prepared file against the manifest")
    vf.add_argument("--dir", default=None)
    vf.set_defaults(func=_verify)


def _prepare(args: argparse.Namespace) -> int:
    from pet.models.prepare import prepare_models
    from pet.paths import models_dir

    res = prepare_models(models_dir(args.dir), force=args.force, log=lambda m: print(f"  {m}", flush=True))
    for name in res.prepared:
        print(f"prepared {name}")
    for name in res.skipped:
        print(f"already prepared {name}")
    print(f"manifest: {res.models_dir / 'manifest.json'} ({res.seconds:.2f} s)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from pet.models.prepare import read_manifest
    from pet.paths import models_dir

    root = models_dir(args.dir)
    entries = read_manifest(root)["models"]
    if not entries:
        print(f"no prepared models under {root}; run: pet models prepare")
        return 0
    print(f"{'name':<24} {'kind':<20} {'MB':>8}  path")
    for name, e in entries.items():
        mb = sum(f["bytes"] for f in e["files"].values()) / 1e6
        print(f"{name:<24} {e['kind']:<20} {mb:>8.1f}  {e['path']}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from pet.models.prepare import verify_models
    from pet.paths import models_dir

    problems = verify_models(models_dir(args.dir))
    for p in problems:
        print(p)
    print("all files match the manifest" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def _hierarchy(args: argparse.Namespace) -> int:
    from pet.cli import CLIError
    from pet.config.loader import load_config
    from pet.hierarchy import prepare_hierarchy

    try:
        ready = prepare_hierarchy(load_config(args.config), log=lambda m: print(f"  {m}", flush=True))
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    print(f"P bundle     {ready.bundle}")
    print(f"E experts    {', '.join(ready.experts) or 'none'}"
          + (f" (installed now: {', '.join(ready.experts_installed)})" if ready.experts_installed else ""))
    print(f"router       {ready.calibration}")
    return 0
