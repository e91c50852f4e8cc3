"""How well a (personalised) P model predicts a user's next message: held-out perplexity and ROUGE-L.

Both are measured in the training format (:func:`pet.personal.personalize.data.example_messages`): the loss of the
message tokens given the context (:func:`pet.metrics.perplexity`), and greedy generation of the message from
the context compared with the real one by ROUGE-L F-measure (:func:`pet.metrics.rouge_l`, as LaMP reports
it). Torch-side (PyTorch model, not the ONNX bundle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pet.config.schema.personal import PersonalizationConfig
from pet.metrics import Row, perplexity, rouge_l
from pet.personal.personalize.data import prompt_messages
from pet.personal.personalize.lora import end_of_turn_id, render_chat, tokenize_example


def _message_rows(tok: Any, records: Sequence[dict[str, Any]], cfg: PersonalizationConfig) -> list[Row]:
    """(ids, labels) of each record in the training format: only the message and its end of turn are scored."""
    examples = (tokenize_example(tok, r, cfg) for r in records)
    return [(e.input_ids, e.labels) for e in examples if e is not None]


def _prompted_rows(tok: Any, records: Sequence[dict[str, Any]], prompt_fn: Any,
                   cfg: PersonalizationConfig) -> list[Row]:
    """(ids, labels) of each record's message after ``prompt_fn(record)``; the front is cut past 2 x max_seq_len."""
    rows = []
    for r in records:
        prompt = tok(render_chat(tok, prompt_fn(r), True), add_special_tokens=False)["input_ids"]
        target = tok(r["text"], add_special_tokens=False)["input_ids"] + [end_of_turn_id(tok)]
        ids = (prompt + target)[-cfg.max_seq_len * 2:]
        n = min(len(target), len(ids) - 1)
        rows.append((ids, [-100] * (len(ids) - n) + ids[-n:]))
    return rows


def generate_next(model: Any, tok: Any, prompts: Sequence[list[dict[str, str]]], max_new_tokens: int = 24,
                  batch_size: int = 8) -> list[str]:
    """Greedy completions of chat prompts (left-padded batches), first line only."""
    import torch

    eos = {tok.eos_token_id, end_of_turn_id(tok)}
    tok.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        texts = [render_chat(tok, p, True) for p in prompts[i:i + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos))
        for row in gen[:, enc["input_ids"].shape[1]:]:
            text = tok.decode(row, skip_special_tokens=True).strip()
            out.append(text.splitlines()[0] if text else "")
    tok.padding_side = "right"
    return out


def evaluate(model: Any, tok: Any, heldout: Sequence[dict[str, Any]], cfg: PersonalizationConfig,
             rouge_n: int | None = None, max_new_tokens: int = 24,
             prompt_fn: Any = None) -> dict[str, float]:
    """Perplexity over all of ``heldout`` and mean ROUGE-L over its first ``rouge_n`` records.

    ``prompt_fn(record) -> messages`` overrides the prompt used for generation (e.g. T's zero-shot prompt);
    perplexity then uses the same prompt.
    """
    model.eval()
    if prompt_fn is None:
        rows = _message_rows(tok, heldout, cfg)
        prompts = [prompt_messages(r.get("context"), cfg.context_turns) for r in heldout]
    else:
        rows = _prompted_rows(tok, heldout, prompt_fn, cfg)
        prompts = [prompt_fn(r) for r in heldout]
    ppl, _ = perplexity(model, rows, tok.pad_token_id)
    sub = list(heldout)[:rouge_n] if rouge_n else list(heldout)
    preds = generate_next(model, tok, prompts[:len(sub)], max_new_tokens)
    rouge = sum(rouge_l(p, r["text"]) for p, r in zip(preds, sub, strict=True)) / max(1, len(sub))
    return {"ppl": ppl, "rouge_l": rouge}

