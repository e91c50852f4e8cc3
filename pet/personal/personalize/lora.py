"""Per-user LoRA on the P model: train on real + synthetic chat examples, merge, save a plain HF folder.

Fast on one CPU core by construction: LoRA sits on the top ``lora_layers`` decoder layers only, so the
backward pass stops there, and the loss is computed from the hidden states of the message tokens alone
(the 49k-way output projection of the context tokens is never formed).

    model, tok = load_base(folder)
    examples = tokenize_examples(tok, records, cfg)       # records: {"text", "context"?}
    result = train_lora(model, tok, examples, cfg)         # -> PeftModel, TrainResult
    save_merged(result.model, tok, out_dir)                # merged weights, loadable without peft
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pet.config.schema import PersonalizationConfig
from pet.paths import set_offline
from pet.personal.personalize.data import example_messages


@dataclass
class Example:
    """One tokenized training example; ``labels`` is -100 on prompt tokens."""

    input_ids: list[int]
    labels: list[int]
    synthetic: bool = False


@dataclass
class TrainResult:
    """What :func:`train_lora` did (no text)."""

    model: Any
    steps: int
    seconds: float
    real_examples: int
    synthetic_examples: int
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        first = sum(self.losses[:3]) / max(1, len(self.losses[:3]))
        last = sum(self.losses[-3:]) / max(1, len(self.losses[-3:]))
        return {"steps": self.steps, "seconds": round(self.seconds, 2), "real_examples": self.real_examples,
                "synthetic_examples": self.synthetic_examples, "loss_first": round(first, 4),
                "loss_last": round(last, 4), "stopped_early": self.stopped_early}


def load_base(folder: str | Path, threads: int = 1) -> tuple[Any, Any]:
    """The P model (fp32) and its tokenizer from a local folder."""
    set_offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json); run: pet models prepare")
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    return model, tok


def end_of_turn_id(tok: Any) -> int:
    """The token that ends a chat turn: ``<|im_end|>`` when the vocabulary has it (SmolLM2's GGUF-derived
    tokenizer names ``<|im_start|>`` as its eos token), else the eos token."""
    vocab = tok.get_vocab()
    return int(vocab["<|im_end|>"]) if "<|im_end|>" in vocab else int(tok.eos_token_id)


def _render(tok: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + "assistant:" if generation_prompt else text


def tokenize_example(tok: Any, record: dict[str, Any], cfg: PersonalizationConfig,
                     synthetic: bool = False) -> Example | None:
    """Chat-format one record; the loss covers the message and its end-of-turn token. None if nothing fits."""
    messages = example_messages(record, cfg.context_turns)
    prompt = tok(_render(tok, messages[:-1], True), add_special_tokens=False)["input_ids"]
    full = tok(_render(tok, messages, False), add_special_tokens=False)["input_ids"]
    if full[:len(prompt)] != prompt:  # tokenization merged across the boundary: fall back to concatenation
        full = prompt + tok(record["text"], add_special_tokens=False)["input_ids"] + [end_of_turn_id(tok)]
    end = end_of_turn_id(tok)
    ends = [i for i, t in enumerate(full) if t == end and i >= len(prompt)]
    if ends:  # stop at the message's end-of-turn token; the template's trailing newline carries no signal
        full = full[:ends[0] + 1]
    labels = [-100] * len(prompt) + full[len(prompt):]
    # Keep the end (the message); the front of the context is what gets cut.
    ids, labels = full[-cfg.max_seq_len:], labels[-cfg.max_seq_len:]
    if all(x == -100 for x in labels[1:]):
        return None
    return Example(ids, labels, synthetic)


def tokenize_examples(tok: Any, records: Sequence[dict[str, Any]], cfg: PersonalizationConfig,
                      synthetic: Sequence[str] = ()) -> list[Example]:
    """Real records then synthetic texts (without context), tokenized."""
    out = [tokenize_example(tok, r, cfg) for r in records]
    out += [tokenize_example(tok, {"text": s}, cfg, synthetic=True) for s in synthetic]
    return [e for e in out if e is not None]


def attach_lora(model: Any, cfg: PersonalizationConfig) -> Any:
    """Wrap ``model`` in a PEFT LoRA on the top ``cfg.lora_layers`` layers (all when 0 or more than exist)."""
    from peft import LoraConfig, get_peft_model

    n_layers = int(model.config.num_hidden_layers)
    layers = None
    if 0 < cfg.lora_layers < n_layers:
        layers = list(range(n_layers - cfg.lora_layers, n_layers))
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [m for m in cfg.target_modules if m in present]
    if not targets:
        raise ValueError(f"none of personalization.target_modules {cfg.target_modules} exist in this model")
    lcfg = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets,
                      layers_to_transform=layers, task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, lcfg)


def _batch_loss(peft_model: Any, batch: list[Example], pad_id: int) -> Any:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, e in enumerate(batch):  # right padding; positions stay 0..len-1
        ids[i, :len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[i, :len(e.input_ids)] = 1
        labels[i, :len(e.labels)] = torch.tensor(e.labels)
    causal = peft_model.get_base_model()
    hidden = causal.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    logits = causal.lm_head(hidden[keep]).float()
    return torch.nn.functional.cross_entropy(logits, target[keep])


def train_lora(model: Any, tok: Any, examples: Sequence[Example], cfg: PersonalizationConfig,
               steps: int | None = None, time_budget_s: float | None = None, progress: bool = True,
               desc: str = "LoRA") -> TrainResult:
    """Train a LoRA adapter on ``examples``; returns the PeftModel (unmerged) and numbers.

    Batches are drawn epoch by epoch from a seeded shuffle; the learning rate warms up over the first 10% of
    steps and decays linearly. ``time_budget_s`` stops early (and says so) rather than overrunning.
    """
    import torch
    from tqdm.auto import tqdm

    if not examples:
        raise ValueError("no training examples (empty data)")
    steps = steps or cfg.steps
    torch.manual_seed(cfg.seed)
    peft_model = attach_lora(model, cfg)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    rng = random.Random(cfg.seed)
    order: list[int] = []
    losses: list[float] = []
    t0 = time.perf_counter()
    stopped = False
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False)
    done = 0
    for _ in range(steps):
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            stopped = True
            break
        if len(order) < cfg.batch_size:
            more = list(range(len(examples)))
            rng.shuffle(more)
            order += more * max(1, math.ceil(cfg.batch_size / len(more)))
        batch = [examples[i] for i in order[:cfg.batch_size]]
        del order[:cfg.batch_size]
        loss = _batch_loss(peft_model, batch, tok.pad_token_id)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        done += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    peft_model.eval()
    return TrainResult(peft_model, done, time.perf_counter() - t0, sum(not e.synthetic for e in examples),
                       sum(e.synthetic for e in examples), losses, stopped)


def merge(peft_model: Any) -> Any:
    """Fold the adapter into the base weights; a plain transformers model."""
    return peft_model.merge_and_unload()


def save_merged(model: Any, tok: Any, out_dir: str | Path, replace: bool = False) -> Path:
    """Save a merged model + tokenizer as an HF folder, atomically."""
    from pet.io import atomic_dir

    with atomic_dir(out_dir, replace=replace) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return Path(out_dir)
