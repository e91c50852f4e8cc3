"""``pet demo [FILE]``: the main job on a configuration (default: the embedded defaults)."""

from __future__ import annotations

import argparse

DEMO_PROMPTS = [
    "What is the capital of France?",
    "Give one tip for writing readable Python code.",
    "What does a bond's yield mean?",
]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    p = sub.add_parser("demo", help="run the main job on a config: answer a few real queries")
    p.add_argument("file", nargs="?", default=None, help="YAML file (default: deployments/default.yaml)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from pet.config.loader import load_config
    from pet.models.lm import CausalLM
    from pet.paths import resolve_model

    cfg = load_config(args.file)
    lm = CausalLM.load(resolve_model(cfg.traditional.model, cfg.models_dir), threads=cfg.traditional.torch_threads)
    for prompt in DEMO_PROMPTS:
        out = lm.generate(prompt, max_new_tokens=args.max_new_tokens)
        print(f"[T] {prompt}\n    -> {out.text.strip()}\n    mean logprob {out.signals.mean_logprob:.2f}, "
              f"{out.usage.completion_tokens} tokens in {out.usage.seconds:.2f}s")
    return 0
