"""LoRA training of one expert domain on the shared base, and its held-out evaluation.

    report = train_lora(base_dir, train_items, heldout_items, out_dir, cfg.expert.training)
    report.ppl_base, report.ppl_expert      # held-out perplexity without / with the adapter

An item is a plain text (every token is trained on and scored) or a ``(prefix, text)`` pair where ``text``
starts with ``prefix`` and only the tokens after the prefix count: for prompt/response samples the prefix is
the chat-templated prompt (system and user turns), so loss and perplexity measure the answers, not the
template boilerplate that an adapter would otherwise learn to "predict" for free.

The training loop is the shared one of :mod:`pet.models.lora` (rank-``r`` LoRA on the target projections of
every layer, AdamW, linear warm-up then constant), configured by
:class:`pet.config.schema.ExpertTrainingConfig`. It stops after ``steps`` optimiser steps or when
``time_budget_s`` runs out, whichever comes first, so the defaults stay under the 10-minute budget on a
shared 2-core machine. Base perplexity is measured on the same held-out texts before the adapter is attached,
so the two numbers differ only by the adapter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pet.config.schema.tiers import ExpertTrainingConfig
from pet.metrics import Item, encode_items, perplexity


@dataclass
class TrainReport:
    """What one run did and measured."""

    ppl_base: float
    ppl_expert: float
    steps: int
    stopped_early: bool
    train_seconds: float
    eval_seconds: float
    train_cpu_seconds: float
    train_samples: int
    heldout_samples: int
    train_tokens: int
    heldout_scored_tokens: int
    trainable_params: int
    final_loss: float
    settings: dict = field(default_factory=dict)

    @property
    def ppl_gain(self) -> float:
        """Relative perplexity reduction, e.g. 0.25 = the adapter's perplexity is 25% lower."""
        return 1.0 - self.ppl_expert / self.ppl_base

    def metrics(self) -> dict[str, Any]:
        """Flat JSON-able record for the registry manifest."""
        out = asdict(self)
        out["ppl_gain"] = self.ppl_gain
        return out


def _ema(losses: Sequence[float]) -> float:
    """Exponential moving average (0.9) of the step losses: the smoothed loss the progress bar showed."""
    ema = float("nan")
    for v in losses:
        ema = v if math.isnan(ema) else 0.9 * ema + 0.1 * v
    return ema


def train_lora(base_dir: str | Path, train_texts: Sequence[Item], heldout_texts: Sequence[Item], out_dir: str | Path,
               training: ExpertTrainingConfig | None = None, log: Callable[[str], None] = print,
               progress: bool = True, base: tuple[Any, Any] | None = None, threads: int | None = None) -> TrainReport:
    """Train a LoRA adapter on ``train_texts``, save it to ``out_dir`` (a PEFT folder), evaluate both models.

    Items are texts or ``(prefix, text)`` pairs (see the module docstring). ``base`` may pass an already loaded
    (model, tokenizer); the model is wrapped in place by peft.
    """
    import torch

    from pet.models.lora import LoopSettings, LoraShape, attach_lora, load_base, save_adapter, train_rows

    s = training or ExpertTrainingConfig()
    if not train_texts or not heldout_texts:
        raise ValueError("need at least one training and one held-out text")
    model, tok = base if base is not None else load_base(base_dir, threads)
    torch.manual_seed(s.seed)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = encode_items(tok, train_texts, s.max_seq_len)
    held = encode_items(tok, heldout_texts, s.max_seq_len)
    if not rows or not held:
        raise ValueError("the training or held-out texts have no tokens to learn from (too short, or prompts "
                         "longer than max_seq_len)")

    t_eval = time.perf_counter()
    log(f"held-out perplexity of the base on {len(held)} texts ...")
    ppl_base, scored = perplexity(model, held, pad_id, s.batch_size)
    eval_seconds = time.perf_counter() - t_eval
    log(f"base perplexity {ppl_base:.3f} ({eval_seconds:.1f} s)")

    pm = attach_lora(model, LoraShape(s.lora_rank, s.lora_alpha, s.lora_target_modules, s.lora_dropout))
    loop = train_rows(pm, rows, pad_id, LoopSettings(s.steps, s.batch_size, s.learning_rate, s.warmup_steps,
                                                     time_budget_s=s.time_budget_s, seed=s.seed),
                      progress=progress, desc="LoRA training", log=log)

    t_eval = time.perf_counter()
    ppl_expert, _ = perplexity(pm, held, pad_id, s.batch_size)
    eval_seconds += time.perf_counter() - t_eval
    log(f"expert perplexity {ppl_expert:.3f} (base {ppl_base:.3f}) after {loop.steps} steps in {loop.seconds:.1f} s")
    save_adapter(pm, out_dir)
    return TrainReport(
        ppl_base=ppl_base, ppl_expert=ppl_expert, steps=loop.steps, stopped_early=loop.stopped_early,
        train_seconds=loop.seconds, eval_seconds=eval_seconds, train_cpu_seconds=loop.cpu_seconds,
        train_samples=len(rows), heldout_samples=len(held), train_tokens=loop.tokens, heldout_scored_tokens=scored,
        trainable_params=sum(p.numel() for p in pm.parameters() if p.requires_grad),
        final_loss=_ema(loop.losses), settings=s.model_dump(),
    )
