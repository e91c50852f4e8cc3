"""Per-user LoRA on the P model: train on real + synthetic chat examples, merge, save a plain HF folder.

    model, tok = load_base(folder)                         # pet.models.lora
    examples = tokenize_examples(tok, records, cfg)       # records: {"text", "context"?}
    result = train_lora(model, tok, examples, cfg)         # -> PeftModel, TrainResult
    save_merged(merge(result.model), tok, out_dir)         # pet.models.lora: merged weights, loadable without peft

The loop is the shared one of :mod:`pet.models.lora`. Fast on one CPU core by construction: LoRA sits on the
top ``lora_layers`` decoder layers only, so the backward pass stops there, and the loss is computed from the
hidden states of the message tokens alone (the 49k-way output projection of the context tokens is never
formed). The learning rate warms up over the first 10% of steps and decays linearly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pet.config.schema.personal import PersonalizationConfig
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


def end_of_turn_id(tok: Any) -> int:
    """The token that ends a chat turn: ``<|im_end|>`` when the vocabulary has it (SmolLM2's GGUF-derived
    tokenizer names ``<|im_start|>`` as its eos token), else the eos token."""
    vocab = tok.get_vocab()
    return int(vocab["<|im_end|>"]) if "<|im_end|>" in vocab else int(tok.eos_token_id)


def render_chat(tok: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    """Chat-templated text of ``messages`` (a plain transcript for tokenizers without a template)."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + "assistant:" if generation_prompt else text


def tokenize_example(tok: Any, record: dict[str, Any], cfg: PersonalizationConfig,
                     synthetic: bool = False) -> Example | None:
    """Chat-format one record; the loss covers the message and its end-of-turn token. None if nothing fits."""
    messages = example_messages(record, cfg.context_turns)
    prompt = tok(render_chat(tok, messages[:-1], True), add_special_tokens=False)["input_ids"]
    full = tok(render_chat(tok, messages, False), add_special_tokens=False)["input_ids"]
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


def train_lora(model: Any, tok: Any, examples: Sequence[Example], cfg: PersonalizationConfig,
               steps: int | None = None, time_budget_s: float | None = None, progress: bool = True,
               desc: str = "LoRA") -> TrainResult:
    """Train a LoRA adapter on the top ``cfg.lora_layers`` layers; returns the PeftModel (unmerged) and numbers.

    ``time_budget_s`` stops early (and says so in the result) rather than overrunning.
    """
    import torch

    from pet.models.lora import LoopSettings, LoraShape, attach_lora, train_rows

    if not examples:
        raise ValueError("no training examples (empty data)")
    steps = steps or cfg.steps
    torch.manual_seed(cfg.seed)
    peft_model = attach_lora(model, LoraShape(cfg.lora_rank, cfg.lora_alpha, cfg.target_modules,
                                              top_layers=cfg.lora_layers))
    loop = train_rows(peft_model, [(e.input_ids, e.labels) for e in examples], tok.pad_token_id,
                      LoopSettings(steps, cfg.batch_size, cfg.learning_rate, max(1, steps // 10), decay=True,
                                   time_budget_s=time_budget_s, seed=cfg.seed), progress=progress, desc=desc)
    return TrainResult(peft_model, loop.steps, loop.seconds, sum(not e.synthetic for e in examples),
                       sum(e.synthetic for e in examples), loop.losses, loop.stopped_early)


def merge(peft_model: Any) -> Any:
    """Fold the adapter into the base weights; a plain transformers model."""
    return peft_model.merge_and_unload()
