"""How well a (personalised) P model predicts a user's next message: held-out perplexity and what it writes.

Both are measured in the training format (:func:`pet.personal.personalize.data.example_messages`): the loss of the
message tokens given the context (:func:`pet.metrics.perplexity`), and the message P generates from the context
(:class:`pet.config.schema.personal.PersonalGenerationConfig`: greedy by default, stopping at ``<|im_end|>``)
compared with the real one by ROUGE-1 and ROUGE-L F-measure (:func:`pet.metrics.rouge_1_l`, as LaMP reports
them), beside the outputs' length, repetition and empty share (:func:`pet.metrics.output_stats`) so that a length
artefact is told apart from a worse model. Torch-side (PyTorch model, not the ONNX bundle).

    res = evaluate(model, tok, heldout, cfg)                # {"ppl", "rouge_1", "rouge_l", "words", ...}
    preds = generate_next(model, tok, prompts, cfg.generation)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pet.config.schema.personal import PersonalGenerationConfig, PersonalizationConfig
from pet.metrics import Row, output_stats, perplexity, rouge_1_l
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


def _decode_kwargs(gen: PersonalGenerationConfig) -> dict[str, Any]:
    """``generate`` keyword arguments of one decoding setting."""
    kw: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "min_new_tokens": gen.min_new_tokens or None,
                          "repetition_penalty": gen.repetition_penalty if gen.repetition_penalty != 1 else None,
                          "no_repeat_ngram_size": gen.no_repeat_ngram_size or None, "do_sample": gen.do_sample}
    if gen.do_sample:
        kw.update(temperature=gen.temperature, top_p=gen.top_p, top_k=0)
    else:
        kw.update(temperature=None, top_p=None, top_k=None)
    return kw


def generate_next(model: Any, tok: Any, prompts: Sequence[list[dict[str, str]]],
                  gen: PersonalGenerationConfig | None = None, batch_size: int = 16) -> list[str]:
    """Completions of chat prompts (left-padded batches, one ``generate`` call each), first line only.

    Generation ends at the end of the turn (``<|im_end|>``) or the eos token, whichever comes first.
    """
    import torch

    gen = gen or PersonalGenerationConfig()
    eos = sorted({tok.eos_token_id, end_of_turn_id(tok)})
    side, tok.padding_side = tok.padding_side, "left"
    out: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [render_chat(tok, p, True) for p in prompts[i:i + batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            if gen.do_sample:
                torch.manual_seed(gen.seed + i)
            with torch.inference_mode():
                ids = model.generate(**enc, pad_token_id=tok.pad_token_id, eos_token_id=eos, **_decode_kwargs(gen))
            for row in ids[:, enc["input_ids"].shape[1]:]:
                text = tok.decode(row, skip_special_tokens=True).strip()
                out.append(text.splitlines()[0].strip() if text else "")
    finally:
        tok.padding_side = side
    return out


def score_generations(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/ROUGE-L F-measure of ``predictions`` against ``references`` plus :func:`output_stats`."""
    pairs = [rouge_1_l(p, r) for p, r in zip(predictions, references, strict=True)]
    n = max(1, len(pairs))
    return {"rouge_1": sum(a for a, _ in pairs) / n, "rouge_l": sum(b for _, b in pairs) / n,
            **output_stats(predictions), "generated": len(pairs)}


def heldout_perplexity(model: Any, tok: Any, heldout: Sequence[dict[str, Any]], cfg: PersonalizationConfig,
                       prompt_fn: Any = None) -> float:
    """Perplexity of the held-out messages after their context (or after ``prompt_fn(record)``)."""
    model.eval()
    rows = _message_rows(tok, heldout, cfg) if prompt_fn is None else _prompted_rows(tok, heldout, prompt_fn, cfg)
    return perplexity(model, rows, tok.pad_token_id)[0]


def heldout_prompts(heldout: Sequence[dict[str, Any]], cfg: PersonalizationConfig,
                    prompt_fn: Any = None) -> list[list[dict[str, str]]]:
    """The generation prompt of each held-out record (training format, or ``prompt_fn(record)``)."""
    if prompt_fn is not None:
        return [prompt_fn(r) for r in heldout]
    return [prompt_messages(r.get("context"), cfg.context_turns) for r in heldout]


def evaluate(model: Any, tok: Any, heldout: Sequence[dict[str, Any]], cfg: PersonalizationConfig,
             rouge_n: int | None = None, prompt_fn: Any = None,
             gen: PersonalGenerationConfig | None = None) -> dict[str, float]:
    """Perplexity over all of ``heldout``; ROUGE and output stats over its first ``rouge_n`` records.

    ``prompt_fn(record) -> messages`` overrides the prompt (e.g. T's zero-shot prompt) for both measures;
    ``gen`` overrides ``cfg.generation``.
    """
    ppl = heldout_perplexity(model, tok, heldout, cfg, prompt_fn)
    sub = list(heldout)[:rouge_n] if rouge_n else list(heldout)
    preds = generate_next(model, tok, heldout_prompts(sub, cfg, prompt_fn), gen or cfg.generation)
    return {"ppl": ppl, **score_generations(preds, [r["text"] for r in sub])}
