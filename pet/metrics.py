"""The quality measures every tier reports: ROUGE-1/ROUGE-L of an answer and perplexity of a causal LM.

    rouge_l(prediction, reference)                          # F-measure in [0, 1]
    r1, rl = rouge_1_l(prediction, reference)               # both F-measures in one scoring
    output_stats(predictions)                               # mean words, repetition and empty share
    ppl, n = perplexity(model, rows, pad_id)                # rows: (token ids, labels), -100 = not scored
    ppl = text_perplexity(model, tokenizer, texts)          # every token after the first of each text

ROUGE-L comes from the ``rouge-score`` package (Lin, 2004; the scorer LaMP and most papers report), F-measure
with its default tokenizer: lower-cased runs of ASCII letters and digits, so punctuation and markdown do not
count and figures compare with the papers'.

Perplexity is exp(mean next-token negative log-likelihood) over the positions whose label is not -100, so one
function serves plain texts, prompt/response pairs (only the response scored) and chat messages after their
context. Rows are right-padded into batches; the attention mask keeps padding out of every score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

Row = tuple[Sequence[int], Sequence[int]]  # (input ids, labels): a label of -100 is not scored
Item = str | tuple[str, str]  # a text, or (prefix, text): only the continuation after the prefix is scored


@lru_cache(maxsize=1)
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"])


def rouge_1_l(prediction: str, reference: str) -> tuple[float, float]:
    """(ROUGE-1, ROUGE-L) F-measures of ``prediction`` against ``reference`` (0 when either has no tokens)."""
    s = _scorer().score(reference, prediction)
    return float(s["rouge1"].fmeasure), float(s["rougeL"].fmeasure)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of ``prediction`` against ``reference`` (0 when either has no tokens)."""
    return rouge_1_l(prediction, reference)[1]


def repetition(text: str, n: int = 2) -> float:
    """Share of the word ``n``-grams of ``text`` that repeat an earlier one (0: no loop; 0 when too short).

    Words are rouge-score's tokens, so repetition and ROUGE see the same text.
    """
    from rouge_score import tokenize

    words = tokenize.tokenize(text, None)
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def output_stats(predictions: Sequence[str]) -> dict[str, float]:
    """Mean words per output (rouge-score tokens), mean :func:`repetition`, and the share of empty outputs.

    Reported beside ROUGE so that a length or looping artefact is told apart from a worse model.
    """
    from rouge_score import tokenize

    if not predictions:
        return {"words": 0.0, "repetition": 0.0, "empty": 0.0}
    lengths = [len(tokenize.tokenize(p, None)) for p in predictions]
    return {"words": sum(lengths) / len(lengths),
            "repetition": sum(repetition(p) for p in predictions) / len(predictions),
            "empty": sum(n == 0 for n in lengths) / len(lengths)}


def encode_items(tok: Any, items: Sequence[Item], max_len: int) -> list[Row]:
    """(token ids, labels) per item, the labels -100 on the prefix; items with nothing to score dropped."""
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
            out.append((ids, [-100] * skip + ids[skip:]))
    return out


def pad_batch(rows: Sequence[Row], pad_id: int) -> tuple[Any, Any, Any]:
    """Right-padded (input ids, attention mask, labels) tensors of ``rows``; labels are -100 on padding."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (x, lab) in enumerate(rows):
        ids[i, :len(x)] = torch.tensor(list(x), dtype=torch.long)
        mask[i, :len(x)] = 1
        labels[i, :len(lab)] = torch.tensor(list(lab), dtype=torch.long)
    return ids, mask, labels


def perplexity(model: Any, rows: Sequence[Row], pad_id: int, batch_size: int = 8) -> tuple[float, int]:
    """(perplexity, scored tokens) of a Hugging Face causal LM over the labelled positions of ``rows``."""
    import torch

    total, count = 0.0, 0
    model.eval()
    for i in range(0, len(rows), batch_size):
        ids, mask, labels = pad_batch(rows[i:i + batch_size], pad_id)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target = labels[:, 1:]
        keep = target != -100
        total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
        count += int(keep.sum())
    if count == 0:
        raise ValueError("no tokens to score")
    return math.exp(total / count), count


def text_perplexity(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 256,
                    batch_size: int = 8) -> float:
    """Token-level perplexity over raw ``texts``, each cut to ``max_length`` tokens."""
    rows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        if ids:
            rows.append((ids, ids))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return perplexity(model, rows, pad_id, batch_size)[0]
