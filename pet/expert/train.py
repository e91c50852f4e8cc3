"""LoRA training of one expert domain on the shared base, and its held-out evaluation.

    report = train_lora(base_dir, train_items, heldout_items, out_dir, settings)
    report.ppl_base, report.ppl_expert      # held-out perplexity without / with the adapter

An item is a plain text (every token is trained on and scored) or a ``(prefix, text)`` pair where ``text``
starts with ``prefix`` and only the tokens after the prefix count: for prompt/response samples the prefix is
the chat-templated prompt (system and user turns), so loss and perplexity measure the answers, not the
template boilerplate that an adapter would otherwise learn to "predict" for free.

The base weights stay frozen; peft wraps the target projections with rank-``r`` LoRA matrices and only
those are trained (AdamW, linear warm-up then constant). The loop stops after ``steps`` optimiser steps or
when ``time_budget_s`` runs out, whichever comes first, so the defaults stay under the 10-minute budget on
a shared 2-core machine. Base perplexity is measured with the adapter disabled on the same held-out texts,
so the two numbers differ only by the adapter.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pet.paths import set_offline

Item = str | tuple[str, str]

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainSettings:
    """Hyper-parameters of one LoRA run (filled from ``ExpertConfig.training``)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: Sequence[str] = DEFAULT_TARGETS
    steps: int = 60
    batch_size: int = 4
    learning_rate: float = 1e-3
    warmup_steps: int = 5
    max_seq_len: int = 256
    time_budget_s: float = 420.0
    eval_batch_size: int = 4
    seed: int = 0
    threads: int | None = None

    @classmethod
    def from_config(cls, training: Any, threads: int | None = None) -> TrainSettings:
        """Build from an ``ExpertTrainingConfig`` section."""
        return cls(
            rank=training.lora_rank, alpha=training.lora_alpha, dropout=training.lora_dropout,
            target_modules=tuple(training.lora_target_modules), steps=training.steps,
            batch_size=training.batch_size, learning_rate=training.learning_rate,
            warmup_steps=training.warmup_steps, max_seq_len=training.max_seq_len,
            time_budget_s=training.time_budget_s, seed=training.seed, threads=threads,
        )


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


def _batches(ids: list[list[int]], batch_size: int, rng: random.Random):
    """Endless shuffled epochs of index batches."""
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            nxt = list(range(len(ids)))
            rng.shuffle(nxt)
            order.extend(nxt)
        yield [ids[i] for i in order[:batch_size]]
        del order[:batch_size]


def _collate(torch: Any, batch: list[tuple[list[int], int]], pad_id: int):
    """Right-padded input ids, attention mask and labels (-100 on padding and on each item's prefix)."""
    n = max(len(x) for x, _ in batch)
    inp = torch.full((len(batch), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(batch), n), dtype=torch.long)
    lab = torch.full((len(batch), n), -100, dtype=torch.long)
    for i, (x, skip) in enumerate(batch):
        inp[i, : len(x)] = torch.tensor(x)
        att[i, : len(x)] = 1
        lab[i, skip: len(x)] = torch.tensor(x[skip:])
    return inp, att, lab


def encode_items(tok: Any, items: Sequence[Item], max_len: int) -> list[tuple[list[int], int]]:
    """(token ids, number of leading prefix tokens not to score) per item; items with nothing to score dropped."""
    out = []
    for it in items:
        prefix, text = ("", it) if isinstance(it, str) else it
        ids = tok(text, add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"]
        skip = 0
        if prefix:
            pids = tok(prefix, add_special_tokens=False)["input_ids"]
            # Score only the continuation when the prefix tokenizes identically inside the text.
            skip = len(pids) if ids[: len(pids)] == pids else 0
        if len(ids) - max(skip, 1) >= 1:
            out.append((ids, skip))
    return out


def masked_perplexity(model: Any, encoded: Sequence[tuple[list[int], int]], pad_id: int,
                      batch_size: int = 4) -> tuple[float, int]:
    """(perplexity, scored tokens) over the non-prefix tokens of ``encoded`` items."""
    import torch

    total, count = 0.0, 0
    model.eval()
    for i in range(0, len(encoded), batch_size):
        inp, att, lab = _collate(torch, list(encoded[i:i + batch_size]), pad_id)
        with torch.inference_mode():
            logits = model(input_ids=inp, attention_mask=att).logits[:, :-1].float()
        target = lab[:, 1:]
        total += float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100,
                                                         reduction="sum"))
        count += int((target != -100).sum())
    if count == 0:
        raise ValueError("no tokens to score")
    return math.exp(total / count), count


def load_base(base_dir: str | Path, threads: int | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of the shared base, fp32, from a local folder only."""
    set_offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    base_dir = Path(base_dir)
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(f"{base_dir} is not a model folder (no config.json); run: pet models prepare")
    tok = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, dtype=torch.float32)
    return model, tok


def train_lora(base_dir: str | Path, train_texts: Sequence[Item], heldout_texts: Sequence[Item], out_dir: str | Path,
               settings: TrainSettings | None = None, log: Callable[[str], None] = print,
               progress: bool = True, base: tuple[Any, Any] | None = None) -> TrainReport:
    """Train a LoRA adapter on ``train_texts``, save it to ``out_dir`` (a PEFT folder), evaluate both models.

    Items are texts or ``(prefix, text)`` pairs (see the module docstring).

    ``base`` may pass an already loaded (model, tokenizer); the model is wrapped in place by peft.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm

    s = settings or TrainSettings()
    if not train_texts or not heldout_texts:
        raise ValueError("need at least one training and one held-out text")
    model, tok = base if base is not None else load_base(base_dir, s.threads)
    torch.manual_seed(s.seed)
    rng = random.Random(s.seed)

    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = encode_items(tok, train_texts, s.max_seq_len)
    held = encode_items(tok, heldout_texts, s.max_seq_len)
    if not ids or not held:
        raise ValueError("the training or held-out texts have no tokens to learn from (too short, or prompts "
                         "longer than max_seq_len)")

    t_eval = time.perf_counter()
    log(f"held-out perplexity of the base on {len(held)} texts ...")
    ppl_base, scored = masked_perplexity(model, held, pad_id, s.eval_batch_size)
    eval_seconds = time.perf_counter() - t_eval
    log(f"base perplexity {ppl_base:.3f} ({eval_seconds:.1f} s)")

    lcfg = LoraConfig(r=s.rank, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=list(s.target_modules),
                      bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    trainable = [p for p in pm.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=s.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / max(1, s.warmup_steps)))

    pm.train()
    t0, c0 = time.perf_counter(), time.process_time()
    steps, tokens, loss_ema, stopped = 0, 0, float("nan"), False
    batches = _batches(ids, s.batch_size, rng)
    bar = tqdm(total=s.steps, desc="LoRA training", unit="step", disable=not progress, dynamic_ncols=True)
    try:
        while steps < s.steps:
            if time.perf_counter() - t0 > s.time_budget_s:
                stopped = True
                log(f"time budget of {s.time_budget_s:.0f} s reached after {steps} steps; stopping early")
                break
            inp, att, lab = _collate(torch, next(batches), pad_id)
            loss = pm(input_ids=inp, attention_mask=att, labels=lab).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            steps += 1
            tokens += int((lab != -100).sum())
            lv = float(loss.detach())
            loss_ema = lv if math.isnan(loss_ema) else 0.9 * loss_ema + 0.1 * lv
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.3f}")
            if not progress and (steps % max(1, s.steps // 10) == 0 or steps == s.steps):
                log(f"step {steps}/{s.steps} loss {loss_ema:.3f} ({time.perf_counter() - t0:.0f} s)")
    finally:
        bar.close()
    train_seconds = time.perf_counter() - t0
    train_cpu = time.process_time() - c0  # CPU time of all threads: comparable across loaded/idle machines
    pm.eval()

    t_eval = time.perf_counter()
    ppl_expert, _ = masked_perplexity(pm, held, pad_id, s.eval_batch_size)
    eval_seconds += time.perf_counter() - t_eval
    log(f"expert perplexity {ppl_expert:.3f} (base {ppl_base:.3f}) after {steps} steps in {train_seconds:.1f} s")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pm.save_pretrained(out_dir, safe_serialization=True)
    settings_dump = asdict(s)
    settings_dump["target_modules"] = list(s.target_modules)
    return TrainReport(
        ppl_base=ppl_base, ppl_expert=ppl_expert, steps=steps, stopped_early=stopped,
        train_seconds=train_seconds, eval_seconds=eval_seconds, train_cpu_seconds=train_cpu,
        train_samples=len(ids), heldout_samples=len(held), train_tokens=tokens, heldout_scored_tokens=scored,
        trainable_params=n_trainable,
        final_loss=loss_ema, settings=settings_dump,
    )
