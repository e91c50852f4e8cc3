"""How well a (personalised) P model predicts a user's next message: held-out perplexity and ROUGE-L.

Both are measured in the training format (:func:`pet.personal.personalize.data.example_messages`): the loss of the
message tokens given the context, and greedy generation of the message from the context compared with
the real one by ROUGE-L F1 over lower-cased words. Torch-side (PyTorch model, not the ONNX bundle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pet.config.schema import PersonalizationConfig
from pet.personal.personalize.data import prompt_messages
from pet.personal.personalize.lora import _render, end_of_turn_id, tokenize_example


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of two strings over lower-cased whitespace/punctuation-split words."""
    import re

    a, b = re.findall(r"\w+", prediction.lower()), re.findall(r"\w+", reference.lower())
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:  # longest common subsequence, one row at a time
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def message_nll(model: Any, tok: Any, records: Sequence[dict[str, Any]], cfg: PersonalizationConfig,
                batch_size: int = 8) -> tuple[float, int]:
    """Summed negative log-likelihood of the message tokens (incl. end of turn) and their count."""
    import torch

    examples = [e for e in (tokenize_example(tok, r, cfg) for r in records) if e is not None]
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = examples[i:i + batch_size]
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for j, e in enumerate(batch):
            ids[j, :len(e.input_ids)] = torch.tensor(e.input_ids)
            mask[j, :len(e.input_ids)] = 1
            labels[j, :len(e.labels)] = torch.tensor(e.labels)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target = labels[:, 1:]
        keep = target != -100
        total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
        count += int(keep.sum())
    return total, count


def perplexity_of(model: Any, tok: Any, records: Sequence[dict[str, Any]], cfg: PersonalizationConfig) -> float:
    """exp(mean NLL per message token) over ``records``."""
    nll, n = message_nll(model, tok, records, cfg)
    if n == 0:
        raise ValueError("no message tokens to score")
    return math.exp(nll / n)


def generate_next(model: Any, tok: Any, prompts: Sequence[list[dict[str, str]]], max_new_tokens: int = 24,
                  batch_size: int = 8) -> list[str]:
    """Greedy completions of chat prompts (left-padded batches), first line only."""
    import torch

    eos = {tok.eos_token_id, end_of_turn_id(tok)}
    tok.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        texts = [_render(tok, p, True) for p in prompts[i:i + batch_size]]
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
        ppl = perplexity_of(model, tok, heldout, cfg)
        prompts = [prompt_messages(r.get("context"), cfg.context_turns) for r in heldout]
    else:
        ppl = _custom_prompt_ppl(model, tok, heldout, prompt_fn, cfg)
        prompts = [prompt_fn(r) for r in heldout]
    sub = list(heldout)[:rouge_n] if rouge_n else list(heldout)
    preds = generate_next(model, tok, prompts[:len(sub)], max_new_tokens)
    rouge = sum(rouge_l(p, r["text"]) for p, r in zip(preds, sub, strict=True)) / max(1, len(sub))
    return {"ppl": ppl, "rouge_l": rouge}


def _custom_prompt_ppl(model: Any, tok: Any, records: Sequence[dict[str, Any]], prompt_fn: Any,
                       cfg: PersonalizationConfig) -> float:
    import torch

    total, count = 0.0, 0
    for r in records:
        prompt = tok(_render(tok, prompt_fn(r), True), add_special_tokens=False)["input_ids"]
        target = tok(r["text"], add_special_tokens=False)["input_ids"] + [end_of_turn_id(tok)]
        ids = torch.tensor([(prompt + target)[-cfg.max_seq_len * 2:]])
        n = min(len(target), ids.shape[1] - 1)
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, -n - 1:-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, -n:], reduction="sum"))
        count += n
    return math.exp(total / max(1, count))
