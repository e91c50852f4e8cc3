"""``pet questioner train|show``: the learned questioner encoder (soft prompts for E and T from a profile).

    pet questioner train --out models/questioner/chitchat      # ~15 min on one core, progress printed
    pet questioner show models/questioner/chitchat             # dimensions, fingerprints, training facts

Training reads chitchat-dataset, keeps ``questioner.train.heldout`` questioners out (the benchmark's held-out
set) and trains only the small encoder over a frozen T (:mod:`pet.questioner.train`). The folder is written
atomically; set ``questioner.mode: learned`` and ``questioner.encoder`` to it (optionally pin
``questioner.encoder_fingerprint``) and E and T use it. See docs/questioner.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pet.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``questioner`` command group."""
    p = sub.add_parser("questioner", help="questioner-aware cloud answers: train or inspect the profile encoder")
    qs = p.add_subparsers(dest="questioner_command", metavar="ACTION", required=True)
    tr = qs.add_parser("train", help="train the soft-prompt encoder over a frozen T on chitchat-dataset")
    tr.add_argument("--out", default=None, help="encoder folder (default: <models_dir>/questioner/chitchat)")
    tr.add_argument("--steps", type=int, default=None, help="optimizer steps (default: questioner.train.steps)")
    tr.add_argument("--replace", action="store_true", help="replace an existing encoder folder atomically")
    tr.add_argument("--cache", default=None, help="folder to keep MiniLM embeddings in between runs")
    tr.add_argument("--config", default=None, help="YAML config (default: deployments/default.yaml)")
    tr.set_defaults(func=_train)
    sh = qs.add_parser("show", help="print an encoder's manifest (without its list of training questioners)")
    sh.add_argument("encoder", help="encoder folder or name under <models_dir>/questioner")
    sh.add_argument("--config", default=None)
    sh.set_defaults(func=_show)


def _train(args: argparse.Namespace) -> int:
    from pet.config.loader import load_config
    from pet.paths import resolve_model
    from pet.questioner.encoder import encoder_dir
    from pet.questioner.train import train_command
    from pet.traditional.versions import model_fingerprint

    cfg = load_config(args.config)
    if args.steps is not None:
        cfg.questioner.train = cfg.questioner.train.updated(steps=args.steps)
    out = Path(args.out) if args.out else encoder_dir("chitchat", cfg.models_dir)
    if out.exists() and not args.replace:
        raise CLIError(f"{out} exists (pass --replace to replace it)")
    fp = model_fingerprint(resolve_model(cfg.traditional.model, cfg.models_dir))
    manifest = train_command(cfg, out, fp, replace=args.replace, cache=Path(args.cache) if args.cache else None,
                             progress=lambda m: print(m, flush=True))
    print(f"encoder written to {out}\n  fingerprint {manifest['fingerprint']}\n  T {manifest['base_fingerprint']}"
          f"\n  set questioner.mode: learned and questioner.encoder: {out}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from pet.config.loader import load_config
    from pet.questioner.encoder import EncoderError, encoder_dir, read_manifest

    cfg = load_config(args.config)
    try:
        manifest = read_manifest(encoder_dir(args.encoder, cfg.models_dir))
    except EncoderError as err:
        raise CLIError(str(err)) from None
    manifest["train_questioners"] = len(manifest.get("train_questioners") or [])
    print(json.dumps(manifest, indent=2, sort_keys=True))
    return 0
