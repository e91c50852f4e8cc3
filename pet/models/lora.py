"""The one LoRA trainer: load a base, attach peft LoRA, train on labelled token rows, save or merge.

    model, tok = load_base("models/smollm2-135m-instruct", threads=1)
    peft_model = attach_lora(model, LoraShape(rank=8, alpha=16, target_modules=["q_proj", "v_proj"]))
    result = train_rows(peft_model, rows, tok.pad_token_id, LoopSettings(steps=40, batch_size=4, ...))
    save_adapter(peft_model, "adapter/")          # an expert: the peft folder
    save_merged(peft_model.merge_and_unload(), tok, "model/")   # a personal P: plain HF weights

A row is ``(input ids, labels)`` with -100 on the tokens not to learn (prompt, context, padding), as
:mod:`pet.metrics` scores them. The base stays frozen; only the LoRA matrices train (AdamW, gradient norm
clipped to 1). The loss runs the decoder to its last hidden state and applies the output projection to the
labelled positions only, so the vocabulary-wide logits of prompt tokens are never formed (the same loss as
``labels=`` in transformers, computed with much less work on a long context). Learning rate: linear warm-up
over ``warmup_steps``, then constant or (``decay``) linear to zero. Training stops after ``steps`` or when
``time_budget_s`` runs out, whichever comes first, and says which.

What the rows hold and what is kept afterwards belongs to each tier: :mod:`pet.expert.train` (a domain adapter
and its held-out evaluation), :mod:`pet.personal.personalize.lora` (a user's merged P model).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pet.metrics import Row, pad_batch
from pet.paths import set_offline


def load_base(folder: str | Path, threads: int | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a causal LM, fp32, from a local folder only; the tokenizer gets a pad token."""
    set_offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json); run: pet models prepare")
    if threads:
        torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    return model, tok


@dataclass(frozen=True)
class LoraShape:
    """Where the LoRA matrices go and how big they are."""

    rank: int
    alpha: float
    target_modules: Sequence[str]
    dropout: float = 0.0
    top_layers: int = 0  # LoRA on the top N decoder layers only (backward stops below them); 0: all layers


@dataclass(frozen=True)
class LoopSettings:
    """How long and how fast one training run goes."""

    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    decay: bool = False  # after warm-up: constant (False) or linear to zero at ``steps`` (True)
    time_budget_s: float | None = None
    seed: int = 0


@dataclass
class LoopResult:
    """What one training run did."""

    steps: int
    seconds: float
    cpu_seconds: float  # CPU time of all threads: comparable across loaded and idle machines
    tokens: int  # labelled tokens trained on
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False


def attach_lora(model: Any, shape: LoraShape) -> Any:
    """Wrap ``model`` in a peft LoRA model; target modules the model lacks are skipped (none present: error)."""
    from peft import LoraConfig, get_peft_model

    n_layers = int(model.config.num_hidden_layers)
    layers = list(range(n_layers - shape.top_layers, n_layers)) if 0 < shape.top_layers < n_layers else None
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [m for m in shape.target_modules if m in present]
    if not targets:
        raise ValueError(f"none of the LoRA target modules {list(shape.target_modules)} exist in this model")
    lcfg = LoraConfig(r=shape.rank, lora_alpha=shape.alpha, lora_dropout=shape.dropout, target_modules=targets,
                      layers_to_transform=layers, task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, lcfg)


def _batches(rows: Sequence[Row], batch_size: int, rng: random.Random) -> Iterator[list[Row]]:
    """Endless full batches drawn epoch by epoch from a seeded shuffle."""
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            more = list(range(len(rows)))
            rng.shuffle(more)
            order += more * max(1, math.ceil(batch_size / len(more)))
        yield [rows[i] for i in order[:batch_size]]
        del order[:batch_size]


def labelled_loss(peft_model: Any, batch: Sequence[Row], pad_id: int) -> tuple[Any, int]:
    """(mean next-token cross-entropy over the labelled positions, their count) of one batch."""
    import torch

    ids, mask, labels = pad_batch(batch, pad_id)
    causal = peft_model.get_base_model()
    hidden = causal.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    logits = causal.lm_head(hidden[keep]).float()
    return torch.nn.functional.cross_entropy(logits, target[keep]), int(keep.sum())


def _lr_scale(s: LoopSettings) -> Callable[[int], float]:
    def scale(k: int) -> float:
        up = min(1.0, (k + 1) / max(1, s.warmup_steps))
        return min(up, max(0.0, (s.steps - k) / max(1, s.steps - s.warmup_steps))) if s.decay else up

    return scale


def train_rows(peft_model: Any, rows: Sequence[Row], pad_id: int, s: LoopSettings, progress: bool = True,
               desc: str = "LoRA", log: Callable[[str], None] | None = None) -> LoopResult:
    """Train the LoRA weights of ``peft_model`` on ``rows``; the model is left in eval mode.

    ``progress`` shows a bar; without it, ``log`` (when given) hears the loss ten times per run.
    """
    import torch
    from tqdm.auto import tqdm

    if not rows:
        raise ValueError("no training examples (empty data)")
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_scale(s))
    batches = _batches(rows, s.batch_size, random.Random(s.seed))
    res = LoopResult(0, 0.0, 0.0, 0)
    peft_model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    bar = tqdm(total=s.steps, desc=desc, unit="step", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        while res.steps < s.steps:
            if s.time_budget_s is not None and time.perf_counter() - t0 > s.time_budget_s:
                res.stopped_early = True
                if log:
                    log(f"time budget of {s.time_budget_s:.0f} s reached after {res.steps} steps; stopping early")
                break
            loss, n = labelled_loss(peft_model, next(batches), pad_id)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            res.steps += 1
            res.tokens += n
            res.losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{res.losses[-1]:.3f}")
            if log and not progress and (res.steps % max(1, s.steps // 10) == 0 or res.steps == s.steps):
                log(f"step {res.steps}/{s.steps} loss {res.losses[-1]:.3f} ({time.perf_counter() - t0:.0f} s)")
    finally:
        bar.close()
    res.seconds, res.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    peft_model.eval()
    return res


def save_adapter(peft_model: Any, out_dir: str | Path) -> Path:
    """The LoRA weights alone, as a peft folder (``adapter_config.json`` + safetensors)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


def save_merged(model: Any, tok: Any, out_dir: str | Path, replace: bool = False) -> Path:
    """A merged model (``peft_model.merge_and_unload()``) and its tokenizer as a plain HF folder, atomically."""
    from pet.io import atomic_dir

    with atomic_dir(out_dir, replace=replace) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return Path(out_dir)
