"""``pet expert register|list|show|remove|recipe|starters|pack``: manage expert domains (LoRA adapters).

    pet expert recipe python --out runs/experts/python.txt --examples-out runs/experts/python.queries.txt
    pet expert register python --data runs/experts/python.txt --examples runs/experts/python.queries.txt
    pet expert list
    pet expert show python
    pet expert remove python
    pet expert starters            # register the shipped python / chitchat domains where missing

Every user mistake (bad name, bad data file, existing domain without --replace, an adapter that does not
improve on the base) is a clear one-line error with exit code 2, and the registry is left unchanged.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pet.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``expert`` command group."""
    p = sub.add_parser("expert", help="register, inspect and remove expert domains (LoRA adapters)")
    es = p.add_subparsers(dest="expert_command", metavar="ACTION", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", default=None, help="YAML config (default: deployments/default.yaml)")
        sp.add_argument("--registry", default=None, help="registry folder (default: expert.registry_dir or "
                                                         "<models_dir>/experts)")

    r = es.add_parser("register", help="train, evaluate and register a domain from a data file")
    r.add_argument("name", help="domain name: a slug such as 'python' or 'tax-law'")
    r.add_argument("--data", default=None, help=".txt text, or .jsonl with 'text' or 'prompt'/'response' fields "
                                                "(required unless --rebase of a domain with a recipe)")
    r.add_argument("--examples", default=None, help="routing example queries: one per line (.txt) or .jsonl")
    r.add_argument("--synthesize", type=int, default=0, metavar="N",
                   help="ask the T model for N extra question/answer pairs seeded by the data")
    r.add_argument("--replace", action="store_true", help="overwrite an existing domain of that name")
    r.add_argument("--force", action="store_true", help="register even if the adapter does not improve the base")
    r.add_argument("--rebase", action="store_true", help="retrain a registered domain on the T version in force "
                                                         "(after pet traditional use); data from --data or its recipe")
    r.add_argument("--steps", type=int, default=None, help="override expert.training.steps")
    r.add_argument("--time-budget", type=float, default=None, help="override expert.training.time_budget_s")
    r.add_argument("--threads", type=int, default=None, help="torch threads (default: expert.torch_threads)")
    r.add_argument("--base", default=None, help="shared base model folder (default: expert.base_model)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    r.add_argument("--contributor", default=None,
                   help="user id credited in the ledger for the domain text used to train the expert")
    common(r)
    r.set_defaults(func=_register)

    ls = es.add_parser("list", help="list registered domains")
    common(ls)
    ls.set_defaults(func=_list)

    sh = es.add_parser("show", help="metrics, size and exemplar count of one domain")
    sh.add_argument("name")
    sh.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    common(sh)
    sh.set_defaults(func=_show)

    rm = es.add_parser("remove", help="unregister a domain (its folder is deleted)")
    rm.add_argument("name")
    common(rm)
    rm.set_defaults(func=_remove)

    rc = es.add_parser("recipe", help="write the data file of a built-in domain from text installed offline")
    rc.add_argument("name", help="recipe name: python or chitchat")
    rc.add_argument("--out", required=True, help="data file to write (.txt for python, .jsonl for chitchat)")
    rc.add_argument("--examples-out", default=None, help="also write example routing queries here")
    rc.set_defaults(func=_recipe)

    st = es.add_parser("starters", help="register the starter domains shipped with pet (python, chitchat) "
                                        "where missing")
    common(st)
    st.set_defaults(func=_starters)

    pk = es.add_parser("pack", help="ship a registered domain as a starter (writes pet/expert/starter/NAME; "
                                    "what `make experts` ends with)")
    pk.add_argument("name")
    common(pk)
    pk.set_defaults(func=_pack)


def _cfg_and_registry(args: argparse.Namespace) -> tuple[Any, Any]:
    from pet.config.loader import load_config
    from pet.expert.registry import ExpertRegistry

    cfg = load_config(args.config)
    reg = ExpertRegistry(args.registry) if args.registry else ExpertRegistry.from_config(cfg)
    return cfg, reg


def _register(args: argparse.Namespace) -> int:
    from pet.expert.data import DataError
    from pet.expert.register import (
        NoImprovementError,
        RegisterOptions,
        contributed_samples,
        rebase_from_config,
        register_from_config,
    )
    from pet.expert.registry import RegistryError

    if args.synthesize < 0:
        raise CLIError("--synthesize must be >= 0")
    cfg, reg = _cfg_and_registry(args)
    try:
        training = cfg.expert.training.updated(steps=args.steps, time_budget_s=args.time_budget)
    except ValueError as err:
        raise CLIError(str(err)) from None
    cfg = cfg.model_copy(update={"expert": cfg.expert.model_copy(update={"training": training})})
    opts = RegisterOptions(examples=args.examples, synthesize=args.synthesize, replace=args.replace,
                           force=args.force, progress=not args.no_progress)
    log = lambda m: print(f"  {m}", flush=True)  # noqa: E731
    if not args.rebase and args.data is None:
        raise CLIError("--data is required (only --rebase may take the data from the domain's recipe)")
    if args.rebase and (args.base or args.contributor):
        raise CLIError("--rebase trains on the T version in force: it takes no --base or --contributor")
    try:
        if args.rebase:
            res = rebase_from_config(cfg, reg, args.name, args.data, opts, threads=args.threads, log=log)
            if res is None:
                return 0
        else:
            res = register_from_config(cfg, reg, args.name, args.data, opts, base=args.base, threads=args.threads,
                                       contributor=args.contributor, log=log)
    except (DataError, RegistryError, NoImprovementError) as err:
        raise CLIError(str(err)) from None
    rep = res.report
    print(f"registered expert {args.name!r} at {res.record.path}")
    print(f"  held-out perplexity: base {rep.ppl_base:.3f} -> expert {rep.ppl_expert:.3f} "
          f"({rep.ppl_gain:+.1%} better)")
    print(f"  {rep.steps} steps in {rep.train_seconds:.1f} s wall ({rep.train_cpu_seconds:.1f} s CPU), "
          f"eval {rep.eval_seconds:.1f} s, "
          f"{rep.train_tokens:,} training tokens, {res.record.exemplar_count} routing exemplars, "
          f"total {res.seconds:.1f} s")
    if res.synth:
        print(f"  synthesis: {res.synth['kept']}/{res.synth['requested']} pairs kept "
              f"({res.synth['generated']} generated, dropped {res.synth['dropped']})")
    if args.contributor:
        state = {True: "credited", False: "already credited", None: "NOT credited (ledger unavailable)"}[res.credited]
        print(f"  contribution: {contributed_samples(res)} samples {state} to {args.contributor!r}")
    return 0


def _list(args: argparse.Namespace) -> int:
    _, reg = _cfg_and_registry(args)
    recs = reg.records()
    if not recs:
        print(f"no expert domains registered under {reg.root}")
        return 0
    print(f"{'name':<20} {'ppl base':>9} {'ppl expert':>10} {'gain':>7} {'exemplars':>9} {'MB':>6}  created")
    for rec in recs:
        m = rec.metrics
        print(f"{rec.name:<20} {m.get('ppl_base', float('nan')):>9.3f} {m.get('ppl_expert', float('nan')):>10.3f} "
              f"{m.get('ppl_gain', float('nan')):>+7.1%} {rec.exemplar_count:>9} {rec.size_bytes / 1e6:>6.2f}  "
              f"{rec.created}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from pet.expert.registry import RegistryError, base_fingerprint

    cfg, reg = _cfg_and_registry(args)
    try:
        rec = reg.get(args.name)
    except RegistryError as err:
        raise CLIError(str(err)) from None
    if args.json:
        print(json.dumps(rec.manifest, indent=2, sort_keys=True))
        return 0
    m = rec.metrics
    data = rec.manifest.get("data", {})
    print(f"expert {rec.name}")
    print(f"  path          {rec.path}")
    fp = rec.manifest.get("base_fingerprint") \
        or f"{base_fingerprint(rec, cfg.models_dir) or '?'}, not recorded: its base's"
    print(f"  base model    {rec.base_model} (fingerprint {fp})")
    print(f"  created       {rec.created}")
    print(f"  size          {rec.size_bytes / 1e6:.2f} MB ({len(rec.manifest.get('files', {}))} files)")
    print(f"  exemplars     {rec.exemplar_count} (from {rec.manifest.get('exemplar_source', '?')})")
    print(f"  data          {data.get('file', '?')}: {data.get('bytes', 0):,} bytes, {data.get('samples', '?')} "
          f"samples, sha256 {str(rec.manifest.get('data_sha256'))[:16]}...")
    if m:
        print(f"  perplexity    base {m['ppl_base']:.3f} -> expert {m['ppl_expert']:.3f} ({m['ppl_gain']:+.1%})"
              f"{' [forced]' if m.get('forced') else ''}")
        rank = m["settings"].get("lora_rank", m["settings"].get("rank"))  # starters packed before issue 24: "rank"
        print(f"  training      {m['steps']} steps, {m['train_seconds']:.1f} s, {m['train_tokens']:,} tokens, "
              f"{m['trainable_params']:,} LoRA parameters (rank {rank})")
    synth = rec.manifest.get("synthesis") or {}
    if synth:
        print(f"  synthesis     {synth.get('kept')}/{synth.get('requested')} T pairs kept")
    try:
        reg.adapter_dir(rec.name, verify=True)
        print("  integrity     ok (sha256 of every adapter file matches)")
    except RegistryError as err:
        print(f"  integrity     FAILED: {err}")
        return 1
    return 0


def _remove(args: argparse.Namespace) -> int:
    from pet.expert.registry import RegistryError

    _, reg = _cfg_and_registry(args)
    try:
        reg.remove(args.name)
    except RegistryError as err:
        raise CLIError(str(err)) from None
    print(f"removed expert {args.name!r}")
    return 0


def _recipe(args: argparse.Namespace) -> int:
    from pet.expert.recipes import get_recipe

    try:
        recipe = get_recipe(args.name)
        out = recipe.write(args.out, args.examples_out)
    except (ValueError, RuntimeError) as err:
        raise CLIError(str(err)) from None
    print(f"wrote {out.data_path} ({out.bytes:,} bytes, {out.samples} {recipe.description})")
    if out.examples_path:
        print(f"wrote {out.examples_path} ({out.examples} example queries)")
    return 0


def _starters(args: argparse.Namespace) -> int:
    from pet.expert.registry import RegistryError
    from pet.expert.starter import available, install_starters

    _, reg = _cfg_and_registry(args)
    try:
        done = install_starters(reg, log=lambda m: print(f"  {m}"))
    except RegistryError as err:
        raise CLIError(str(err)) from None
    kept = [n for n in available() if n not in done]
    print(f"starter experts under {reg.root}: installed {', '.join(done) or 'none'}"
          + (f"; already registered: {', '.join(kept)}" if kept else ""))
    return 0


def _pack(args: argparse.Namespace) -> int:
    from pet.expert.registry import RegistryError
    from pet.expert.starter import pack

    _, reg = _cfg_and_registry(args)
    try:
        out = pack(reg, args.name)
    except RegistryError as err:
        raise CLIError(str(err)) from None
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"packed {args.name!r} into {out} ({size / 1e6:.2f} MB)")
    return 0
