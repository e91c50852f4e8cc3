"""``pet traditional upgrade|list|use|rollback``: T versions that absorb the experts.

    pet traditional upgrade --experts python,chitchat --method ties --weights 1,1   # merge, gate, write T-vN
    pet traditional list                        # versions, their parents, methods and gate numbers
    pet traditional use smollm2-135m-instruct-v1 --rollout   # and switch the running graph in place
    pet traditional rollback --rollout          # back to the version in force before

An upgrade the gate refuses, an unknown expert or method, weights that do not fit, or an expert trained on
another T exit 2 with the reason; nothing is written. The library side is :mod:`pet.expert.absorb` (registry,
held-out texts), :mod:`pet.traditional.upgrade` (merge, gate, write) and :mod:`pet.traditional.versions`.
"""

from __future__ import annotations

import argparse
from typing import Any

from pet.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``traditional`` command group."""
    p = sub.add_parser("traditional", help="T versions: merge expert adapters into T, list, switch, roll back")
    ts = p.add_subparsers(dest="traditional_command", metavar="ACTION", required=True)

    up = ts.add_parser("upgrade", help="merge expert adapters into a new T version (gated by held-out perplexity)")
    up.add_argument("--experts", required=True, help="comma-separated registered expert names, e.g. python,chitchat")
    up.add_argument("--method", default=None, help="linear, ties, dare_ties or svd (default: "
                                                   "traditional.upgrade.method)")
    up.add_argument("--weights", default=None, help="comma-separated weight per expert (default: 1 each)")
    up.add_argument("--data", action="append", default=[], metavar="NAME=FILE",
                    help="the data file an expert was registered from (needed when it has no recipe)")
    up.add_argument("--force", action="store_true", help="write the version even if the gate refuses it")
    up.add_argument("--threads", type=int, default=None, help="torch threads (default: traditional.torch_threads)")
    up.add_argument("--config", default=None, help="YAML config (default: deployments/default.yaml)")
    up.set_defaults(func=_upgrade)

    ls = ts.add_parser("list", help="T versions with their manifests' key numbers")
    ls.add_argument("--config", default=None)
    ls.set_defaults(func=_list)

    us = ts.add_parser("use", help="make a T version the one in force (recorded in the state folder)")
    us.add_argument("version", help="a version name from `pet traditional list`, or traditional.model itself")
    us.add_argument("--config", default=None)
    us.add_argument("--rollout", action="store_true", help="also switch the running graph now (in place, no "
                                                           "downtime: old T replicas drain while new ones start)")
    us.set_defaults(func=_use)

    rb = ts.add_parser("rollback", help="make the T version in force before the current one current again")
    rb.add_argument("--config", default=None)
    rb.add_argument("--rollout", action="store_true", help="also switch the running graph back now (in place)")
    rb.set_defaults(func=_rollback)


def parse_weights(text: str | None) -> list[float] | None:
    """``"1,0.5"`` -> [1.0, 0.5]; CLIError naming the bad entry."""
    if text is None:
        return None
    out = []
    for part in text.split(","):
        try:
            out.append(float(part))
        except ValueError:
            raise CLIError(f"--weights: {part.strip()!r} is not a number (give e.g. --weights 1,0.5)") from None
    return out


def _data_files(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise CLIError(f"--data {pair!r}: expected NAME=FILE")
        out[name] = path
    return out


def _upgrade(args: argparse.Namespace) -> int:
    from pet.config.loader import load_config
    from pet.expert.absorb import upgrade_from_config
    from pet.expert.data import DataError
    from pet.expert.registry import RegistryError
    from pet.traditional.upgrade import UpgradeError, UpgradeRefused
    from pet.traditional.versions import VersionError

    names = [n.strip() for n in args.experts.split(",") if n.strip()]
    weights, data = parse_weights(args.weights), _data_files(args.data)
    cfg = load_config(args.config)
    log = lambda m: print(f"  {m}", flush=True)  # noqa: E731
    try:
        res = upgrade_from_config(cfg, names, args.method, weights, args.force, data, args.threads, log)
    except (UpgradeError, UpgradeRefused, RegistryError, DataError, VersionError) as err:
        raise CLIError(str(err)) from None
    v = res.version
    state = "FORCED past the gate" if res.failures else "passed the gate"
    print(f"wrote T version {v.name} at {v.path}")
    print(f"  {state}; merge {res.merge_seconds:.1f} s, total {res.seconds:.0f} s")
    _print_table(res.table)
    print(f"switch to it with: pet traditional use {v.name}")
    return 0


def _print_table(table: dict[str, dict[str, float]]) -> None:
    print(f"  {'held-out set':<16} {'parent ppl':>10} {'merged ppl':>10} {'change':>8}")
    for key, row in table.items():
        print(f"  {key:<16} {row['parent']:>10.3f} {row['merged']:>10.3f} {row['change']:>+8.1%}")


def _list(args: argparse.Namespace) -> int:
    from pet.config.loader import load_config
    from pet.traditional.versions import in_force, list_versions, versions_root

    cfg = load_config(args.config)
    root = versions_root(cfg.models_dir)
    t = _in_force(cfg, in_force)
    versions = list_versions(root)
    print(f"T in force: {t.name} ({t.source})")
    if not versions:
        print(f"no T versions under {root}; make one with: pet traditional upgrade --experts NAME,...")
        return 0
    print(f"  {'version':<30} {'parent':<30} {'method':<10} {'experts':<20} {'general':>8} {'domains':>8}  gate")
    for v in versions:
        m = v.manifest
        ev = m.get("evaluation", {})
        general = ev.get("general", {}).get("change", float("nan"))
        domains = [row["change"] for key, row in ev.items() if key != "general"]
        dom = sum(domains) / len(domains) if domains else float("nan")
        gate = "forced" if m.get("gate", {}).get("forced") else "passed"
        mark = "*" if v.name == t.name else " "
        print(f"{mark} {v.name:<30} {m.get('parent', {}).get('name', '?'):<30} {m.get('method', '?'):<10} "
              f"{','.join(e['name'] for e in m.get('experts', [])):<20} {general:>+8.1%} {dom:>+8.1%}  {gate}")
    print("(general / domains: perplexity change against the parent; domains averaged; * = in force)")
    return 0


def _in_force(cfg: Any, fn: Any) -> Any:
    from pet.traditional.versions import VersionError

    try:
        return fn(cfg)
    except VersionError as err:
        raise CLIError(str(err)) from None


def _use(args: argparse.Namespace) -> int:
    from pet.config.loader import load_config
    from pet.traditional.versions import use_version

    cfg = load_config(args.config)
    before, after = _in_force(cfg, lambda c: use_version(c, args.version))
    print(f"T in force: {after.name} (was {before.name})")
    return _maybe_rollout(cfg, args.rollout)


def _maybe_rollout(cfg: Any, wanted: bool) -> int:
    if not wanted:
        print("a running graph picks it up on its next deploy, or now with --rollout")
        return 0
    from pet.serve.control import request_rollout

    try:
        print(request_rollout(cfg))
    except (RuntimeError, TimeoutError) as err:
        raise CLIError(str(err)) from None
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from pet.config.loader import load_config
    from pet.traditional.versions import rollback

    cfg = load_config(args.config)
    before, after = _in_force(cfg, rollback)
    print(f"T in force: {after.name} (rolled back from {before.name})")
    return _maybe_rollout(cfg, args.rollout)
