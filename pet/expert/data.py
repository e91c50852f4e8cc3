"""Domain data for expert training: read, validate, chunk and split.

A data file is either plain text (``.txt``: packed into chunks of about ``chunk_chars`` characters along
paragraph boundaries) or JSON Lines (``.jsonl``: one object per line with ``text``, or ``prompt`` and
``response``). Every problem is a :class:`DataError` naming the file, the line and what is wrong, raised
before any model is loaded, so a bad file never changes the registry.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUFFIXES = (".txt", ".jsonl")
MIN_SAMPLES = 4  # below this a held-out split says nothing


class DataError(ValueError):
    """A domain data or examples file is unusable; the message says which file and why."""


@dataclass(frozen=True)
class Sample:
    """One training unit: free text, or a prompt/response pair (trained through the chat template)."""

    text: str | None = None
    prompt: str | None = None
    response: str | None = None

    @property
    def is_pair(self) -> bool:
        """True for prompt/response samples."""
        return self.prompt is not None

    def query(self, max_chars: int = 300) -> str:
        """A query-like view of the sample (for routing exemplars and synthesis seeds)."""
        src = self.prompt if self.is_pair else self.text
        return (src or "")[:max_chars].strip()

    def item(self, tokenizer: Any) -> str | tuple[str, str]:
        """What training scores: the text, or (templated prompt, templated prompt + response) for pairs."""
        if not self.is_pair:
            return self.text or ""
        full = self.render(tokenizer)
        user = [{"role": "user", "content": self.prompt}]
        if getattr(tokenizer, "chat_template", None):
            prefix = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        else:
            prefix = f"user: {self.prompt}\nassistant: "
        return (prefix, full) if full.startswith(prefix) else full

    def render(self, tokenizer: Any) -> str:
        """The training/evaluation text: chat-templated for pairs (when the tokenizer has a template)."""
        if not self.is_pair:
            return self.text or ""
        messages = [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.response}]
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False)
        return f"user: {self.prompt}\nassistant: {self.response}\n"


@dataclass
class DomainData:
    """A validated data file."""

    path: Path
    samples: list[Sample]
    sha256: str
    bytes: int
    kind: str  # "text" | "jsonl"
    stats: dict[str, Any] = field(default_factory=dict)


def _read_text(path: Path, max_bytes: int, what: str) -> tuple[str, bytes]:
    if not path.exists():
        raise DataError(f"{what} file {path} does not exist")
    if not path.is_file():
        raise DataError(f"{what} file {path} is not a regular file")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"{what} file {path} is {size:,} bytes; the limit is {max_bytes:,} (expert.max_data_bytes)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{what} file {path} is not UTF-8 text (invalid byte at offset {err.start})") from None
    if not text.strip():
        raise DataError(f"{what} file {path} is empty")
    if "\x00" in text:
        raise DataError(f"{what} file {path} contains NUL bytes; it looks binary, not text")
    return text, raw


def _pack(parts: list[str], sep: str, limit: int) -> list[str]:
    """Join consecutive ``parts`` with ``sep`` while the result stays within ``limit`` characters."""
    out: list[str] = []
    cur = ""
    for p in parts:
        if cur and len(cur) + len(sep) + len(p) > limit:
            out.append(cur)
            cur = ""
        cur = f"{cur}{sep}{p}" if cur else p
    if cur:
        out.append(cur)
    return out


def _hard_cut(line: str, limit: int) -> list[str]:
    """``line`` in pieces of ``limit`` characters (the last one shorter)."""
    cuts = [line[i:i + limit] for i in range(0, len(line) - limit, limit)] if len(line) > limit else []
    return cuts + [line[len(cuts) * limit:]]


def chunk_text(text: str, chunk_chars: int = 1000) -> list[str]:
    """Pack paragraphs (blank-line separated) into chunks of at most about ``chunk_chars`` characters.

    A paragraph longer than ``chunk_chars`` is cut on line boundaries, then hard-cut as a last resort.
    """
    paras = [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]
    pieces: list[str] = []
    for p in paras:
        if len(p) <= chunk_chars:
            pieces.append(p)
        else:
            lines = [cut for line in p.split("\n") for cut in _hard_cut(line, chunk_chars)]
            pieces.extend(_pack(lines, "\n", chunk_chars))
    return [c for c in _pack(pieces, "\n\n", chunk_chars) if c.strip()]


def _parse_jsonl(path: Path, text: str) -> list[Sample]:
    samples = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{no}: not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{no}: expected a JSON object, got {type(obj).__name__}")
        if "prompt" in obj or "response" in obj:
            p, r = obj.get("prompt"), obj.get("response")
            if not isinstance(p, str) or not isinstance(r, str) or not p.strip() or not r.strip():
                raise DataError(f"{path}:{no}: 'prompt' and 'response' must both be non-empty strings")
            samples.append(Sample(prompt=p.strip(), response=r.strip()))
        elif "text" in obj:
            t = obj["text"]
            if not isinstance(t, str) or not t.strip():
                raise DataError(f"{path}:{no}: 'text' must be a non-empty string")
            samples.append(Sample(text=t.strip()))
        else:
            raise DataError(f"{path}:{no}: needs a 'text' field or 'prompt' and 'response' fields")
    return samples


def load_domain_data(path: str | Path, max_bytes: int = 20_000_000, chunk_chars: int = 1000) -> DomainData:
    """Read and validate a ``.txt`` or ``.jsonl`` data file; raises :class:`DataError` on any problem."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"data file {path} must end in .txt or .jsonl (got {path.suffix or 'no suffix'!r})")
    text, raw = _read_text(path, max_bytes, "data")
    if path.suffix.lower() == ".jsonl":
        samples, kind = _parse_jsonl(path, text), "jsonl"
    else:
        samples, kind = [Sample(text=c) for c in chunk_text(text, chunk_chars)], "text"
    if len(samples) < MIN_SAMPLES:
        raise DataError(f"data file {path} yields {len(samples)} sample(s); at least {MIN_SAMPLES} are needed "
                        "for a training/held-out split (add more text)")
    pairs = sum(s.is_pair for s in samples)
    stats = {"samples": len(samples), "pairs": pairs, "chars": sum(len(s.render(None)) for s in samples)}
    return DomainData(path, samples, hashlib.sha256(raw).hexdigest(), len(raw), kind, stats)


def load_queries(path: str | Path, max_bytes: int = 5_000_000) -> list[str]:
    """Example queries for routing exemplars: one per line (``.txt``) or ``prompt``/``text`` in ``.jsonl``."""
    path = Path(path)
    text, _ = _read_text(path, max_bytes, "examples")
    if path.suffix.lower() == ".jsonl":
        out = [s.query(10_000) for s in _parse_jsonl(path, text)]
    else:
        out = [line.strip() for line in text.splitlines() if line.strip()]
    out = list(dict.fromkeys(q for q in out if q))
    if not out:
        raise DataError(f"examples file {path} has no queries")
    return out


def split_heldout(samples: Sequence[Sample], fraction: float, seed: int = 0,
                  max_heldout: int = 64) -> tuple[list[Sample], list[Sample]]:
    """Deterministic shuffle-split into (train, heldout); at least one sample on each side."""
    idx = list(range(len(samples)))
    random.Random(seed).shuffle(idx)
    n_held = min(max_heldout, max(1, round(len(samples) * fraction)))
    n_held = min(n_held, len(samples) - 1)
    held = [samples[i] for i in idx[:n_held]]
    train = [samples[i] for i in idx[n_held:]]
    return train, held


def sample_queries(samples: Sequence[Sample], n: int, seed: int = 0, max_chars: int = 300) -> list[str]:
    """Up to ``n`` distinct query-like snippets drawn from the data (routing exemplars without --examples)."""
    idx = list(range(len(samples)))
    random.Random(seed).shuffle(idx)
    out: list[str] = []
    seen = set()
    for i in idx:
        q = samples[i].query(max_chars)
        if q and q not in seen:
            seen.add(q)
            out.append(q)
        if len(out) >= n:
            break
    return out
