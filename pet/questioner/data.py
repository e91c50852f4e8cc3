"""chitchat-dataset as questioners and dialogues: who asked, what their partner answered, the held-out split.

A *dialogue* is one exchange: the questioner's turn (their consecutive messages, with up to ``context_turns``
earlier turns) and the partner's reply turn right after it. Each questioner's conversations are split by time:
the earlier half is their *profile* history (what their device store would hold), the later half gives the
dialogues that are trained on or scored. Questioners are split into train and held-out sets by a seeded shuffle,
so no held-out questioner is ever seen in training.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

MAX_TURN_CHARS = 400


@dataclass
class Dialogue:
    """One questioner turn and the partner's real reply."""

    questioner: str
    conversation: str
    context: list[dict[str, str]]  # earlier turns; the questioner is "user", the partner "assistant"
    query: str
    reply: str

    def messages(self) -> list[dict[str, str]]:
        """The chat T sees: context turns and the questioner's turn as the last user message."""
        return [*self.context, {"role": "user", "content": self.query}]


@dataclass
class Questioner:
    """A sender of chitchat-dataset: their profile history and their later dialogues."""

    id: str
    history: list[str] = field(default_factory=list)  # their own messages in the earlier half of conversations
    received: list[str] = field(default_factory=list)  # partners' replies to them in that earlier half
    dialogues: list[Dialogue] = field(default_factory=list)  # from the later half


def _turns(conv: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for group in conv["messages"]:
        texts = [m["text"].strip() for m in group if m["text"].strip()]
        if texts:
            out.append((group[0]["sender"], "\n".join(texts)[:MAX_TURN_CHARS]))
    return out


def _dialogues(cid: str, turns: list[tuple[str, str]], who: str, context_turns: int) -> list[Dialogue]:
    out = []
    for i in range(len(turns) - 1):
        if turns[i][0] != who or turns[i + 1][0] == who:
            continue
        ctx = [{"role": "user" if s == who else "assistant", "content": t}
               for s, t in turns[max(0, i - context_turns):i]]
        while ctx and ctx[0]["role"] != "user":  # a chat starts with a user turn
            ctx = ctx[1:]
        out.append(Dialogue(who, cid, ctx, turns[i][1], turns[i + 1][1]))
    return out


def load_questioners(min_conversations: int = 8, context_turns: int = 2, data: Any = None) -> dict[str, Questioner]:
    """Every sender with at least ``min_conversations`` conversations, history and dialogues split by time."""
    if data is None:
        import chitchat_dataset

        data = chitchat_dataset.Dataset()
    convs: dict[str, list[tuple[str, str, list[tuple[str, str]]]]] = defaultdict(list)
    for cid, conv in data.items():
        turns = _turns(conv)
        for who in {s for s, _ in turns}:
            convs[who].append((conv.get("start") or "", cid, turns))
    out = {}
    for who, items in sorted(convs.items()):
        if len(items) < min_conversations:
            continue
        items.sort()
        half = len(items) // 2
        q = Questioner(who)
        for _, cid, turns in items[:half]:
            q.history.extend(t for s, t in turns if s == who)
            q.received.extend(d.reply for d in _dialogues(cid, turns, who, 0))
        for _, cid, turns in items[half:]:
            q.dialogues.extend(_dialogues(cid, turns, who, context_turns))
        if q.history and q.dialogues:
            out[who] = q
    return out


def split_questioners(ids: list[str], heldout: int, train: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train ids, held-out ids): disjoint, from one seeded shuffle of the sorted ids."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    if heldout + 2 > len(order):
        raise ValueError(f"{len(order)} questioners cannot give {heldout} held-out and at least 2 for training")
    held = order[:heldout]
    return order[heldout:heldout + train], held
