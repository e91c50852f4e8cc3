"""Teacher-forced scoring of a reply under a causal LM, with or without soft-prompt vectors in front.

    rows = [encode_row(lm, d.messages(), d.reply, 96, 32) for d in dialogues]
    nll, n = reply_nll(lm, rows, soft=None)          # per row: summed NLL of the reply tokens, their count

Used by the encoder's training (with gradients into ``soft``) and by benchmarks/questioner.py. Rows are
right-padded, so positions of real tokens are unchanged; the LM head runs only on the reply positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Row:
    """Token ids of one templated prompt and the reply that follows it."""

    prompt: list[int]
    reply: list[int]


def encode_row(lm: Any, messages: list[dict[str, str]], reply: str, max_prompt: int, max_reply: int) -> Row:
    """Template ``messages`` with T's chat template; earlier turns are dropped (then the start cut) to fit."""
    msgs = list(messages)
    while True:
        ids = lm.tokenizer(lm.render(msgs), add_special_tokens=False)["input_ids"]
        if len(ids) <= max_prompt or len(msgs) <= 1 or msgs[0]["role"] == "system" and len(msgs) <= 2:
            break
        first = 1 if msgs[0]["role"] == "system" else 0
        msgs = msgs[:first] + msgs[first + 1:]
    reply_ids = lm.tokenizer(reply, add_special_tokens=False)["input_ids"][:max_reply]
    return Row(ids[-max_prompt:], reply_ids)


def reply_nll(lm: Any, rows: Sequence[Row], soft: Any = None, grad: bool = False) -> tuple[Any, Any]:
    """(summed NLL of each row's reply tokens, reply token counts) as tensors of shape [len(rows)].

    ``soft``: None, or a tensor [len(rows), k, hidden] put in front of every row's prompt embeddings.
    """
    torch = lm.torch
    model = lm.model
    emb = model.get_input_embeddings()
    k = 0 if soft is None else int(soft.shape[1])
    lengths = [k + len(r.prompt) + len(r.reply) for r in rows]
    width = max(lengths)
    pad = lm.tokenizer.pad_token_id or 0
    ids = torch.full((len(rows), width - k), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        seq = r.prompt + r.reply
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :lengths[i]] = 1
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    with ctx:
        x = emb(ids)
        if soft is not None:
            x = torch.cat([soft.to(x.dtype), x], dim=1)
        hidden = model.model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        pos, tgt, owner = [], [], []
        for i, r in enumerate(rows):
            start = k + len(r.prompt)
            for j, t in enumerate(r.reply):
                pos.append((i, start + j - 1))
                tgt.append(t)
                owner.append(i)
        bi = torch.tensor([p[0] for p in pos])
        ti = torch.tensor([p[1] for p in pos])
        logits = model.lm_head(hidden[bi, ti]).float()
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(tgt), reduction="none")
        sums = torch.zeros(len(rows), dtype=nll.dtype).index_add(0, torch.tensor(owner), nll)
    counts = torch.tensor([len(r.reply) for r in rows], dtype=torch.float32)
    return sums, counts
