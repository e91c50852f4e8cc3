"""Personal data on the device: reading a data file, choosing the share that may leave the device, and
turning messages into chat-formatted training examples.

Data file formats (``pet personalize --data FILE``):

- ``.jsonl``: one JSON value per line, a string or ``{"text": str, "context": [chat turns]?}``;
- ``.json``: a list of the same;
- anything else: UTF-8 text, one message per non-empty line.

A record's optional ``context`` is the conversation before the message as chat turns, where the user's own
earlier messages are ``assistant`` turns and the other side's are ``user`` turns: the P model learns to write
the user's next message. Synthetic samples (and records without context) use :data:`NO_CONTEXT`.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from pet.personal.personalize.store import StoreError, normalize_record

# The turn a message without conversation context answers; the same string at training and evaluation.
NO_CONTEXT = [{"role": "user", "content": "Hi"}]
# Replaces SmolLM2's default system prompt (about 20 tokens): shorter sequences train faster on one core.
SYSTEM = {"role": "system", "content": "Write the next chat message as me."}


def load_data_file(path: str | Path, max_bytes: int) -> list[dict[str, Any]]:
    """Records of a data file; StoreError for a missing, oversized, empty or malformed file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise StoreError(f"data file {path} does not exist")
    size = path.stat().st_size
    if size > max_bytes:
        raise StoreError(f"data file {path} is {size} bytes; the limit is {max_bytes} "
                         "(personalization.max_data_bytes)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StoreError(f"data file {path} is not UTF-8 text") from None
    if path.suffix == ".jsonl":
        items = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except ValueError:
                    raise StoreError(f"data file {path}: line {i} is not valid JSON") from None
    elif path.suffix == ".json":
        try:
            items = json.loads(text)
        except ValueError:
            raise StoreError(f"data file {path} is not valid JSON") from None
        if not isinstance(items, list):
            raise StoreError(f"data file {path} must hold a JSON list of messages")
    else:
        items = [line for line in text.splitlines() if line.strip()]
    if not items:
        raise StoreError(f"data file {path} holds no messages")
    return [normalize_record(x, i) for i, x in enumerate(items)]


def select_share(texts: list[str], fraction: float, pattern: str | None = None, seed: int = 0) -> list[int]:
    """Indices of the messages that may leave the device, sorted.

    Candidates are the messages matching ``pattern`` (a regular expression searched in each message; all
    messages when None); a seeded random ``fraction`` of them (rounded, at least one when ``fraction > 0``
    and there is a candidate) is shared. Everything else stays on the device.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
        raise StoreError(f"share fraction must be a number in [0, 1] (got {fraction!r})")
    rx = None
    if pattern is not None:
        try:
            rx = re.compile(pattern)
        except re.error as err:
            raise StoreError(f"--share-filter is not a valid regular expression: {err}") from None
    candidates = [i for i, t in enumerate(texts) if rx is None or rx.search(t)]
    k = round(fraction * len(candidates))
    if fraction > 0 and candidates:
        k = max(1, k)
    return sorted(random.Random(seed).sample(candidates, k))


def example_messages(record: dict[str, Any], context_turns: int) -> list[dict[str, str]]:
    """The chat the P model is trained on for one record: system, context (or NO_CONTEXT), the message."""
    ctx = list(record.get("context") or [])[-context_turns:] if context_turns else []
    if not ctx or ctx[0]["role"] != "user":
        ctx = NO_CONTEXT + ctx
    return [SYSTEM, *ctx, {"role": "assistant", "content": record["text"]}]


def prompt_messages(context: list[dict[str, str]] | None, context_turns: int) -> list[dict[str, str]]:
    """The prompt for generating the user's next message after ``context`` (same format as training)."""
    return example_messages({"text": "", "context": context or []}, context_turns)[:-1]
