"""Real text for distillation and for held-out perplexity: Python stdlib documentation (pydoc) and
chitchat-dataset conversations; and the data of a domain teacher (:func:`domain_teacher_data`).

Both sources are split deterministically into a training part and a held-out part that never overlap
(different stdlib modules; different conversations), so held-out perplexity measures generalisation.
Nothing here downloads anything; chitchat-dataset is an installed package.
"""

from __future__ import annotations

import hashlib
import importlib
import pydoc
import warnings
from typing import Any

# Stdlib modules with substantial prose docstrings. The held-out ones are never trained on.
TRAIN_MODULES = (
    "argparse", "collections", "json", "pathlib", "re", "itertools", "functools", "subprocess", "logging",
    "datetime", "textwrap", "string", "random", "statistics", "csv", "shutil", "tempfile", "typing", "enum",
    "dataclasses", "heapq", "bisect", "contextlib", "threading", "queue", "socket", "email.message", "zipfile",
    "tarfile", "urllib.parse", "http.client", "sqlite3", "decimal", "fractions", "calendar", "difflib",
    "inspect", "operator", "pickle", "copy", "pprint", "abc", "unittest", "doctest", "glob", "fnmatch",
)
HELDOUT_MODULES = ("os", "math", "time", "hashlib", "base64", "uuid", "gzip", "configparser")


def _split_chunks(text: str, chars: int) -> list[str]:
    """Cut text at paragraph borders into pieces of roughly ``chars`` characters."""
    out, cur = [], ""
    for para in text.split("\n\n"):
        para = para.strip()
        if not para:
            continue
        if cur and len(cur) + len(para) > chars:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para
    if cur:
        out.append(cur)
    return [c[:chars * 2] for c in out if len(c) >= 80]


def pydoc_texts(modules: tuple[str, ...], chars: int = 1200) -> list[str]:
    """Plain-text pydoc pages of ``modules`` cut into chunks (modules that fail to import are skipped)."""
    out: list[str] = []
    for name in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(name)
                text = pydoc.render_doc(mod, renderer=pydoc.plaintext)
        except Exception:  # an optional stdlib module missing on this Python build is not fatal
            continue
        out.extend(_split_chunks(text, chars))
    return out


def _heldout_conversation(conv_id: str) -> bool:
    # A stable hash of the id puts ~10% of conversations in the held-out part.
    return hashlib.sha256(conv_id.encode()).digest()[0] < 26


def chitchat_texts(heldout: bool, limit: int, turns_per_text: int = 12) -> list[str]:
    """Conversation excerpts from chitchat-dataset as plain alternating lines (no sender ids)."""
    try:
        import chitchat_dataset
    except ImportError:
        return []
    ds = chitchat_dataset.Dataset()
    out: list[str] = []
    for conv_id in sorted(ds):
        if _heldout_conversation(conv_id) != heldout:
            continue
        lines = [" ".join(m["text"] for m in turn) for turn in ds[conv_id]["messages"]]
        for i in range(0, len(lines), turns_per_text):
            chunk = lines[i:i + turns_per_text]
            if len(chunk) >= 4:
                out.append("\n".join(chunk))
        if len(out) >= limit:
            break
    return out[:limit]


def training_texts(limit_chat: int = 3000) -> list[str]:
    """The real-text training mix: stdlib docs plus chat excerpts."""
    return pydoc_texts(TRAIN_MODULES) + chitchat_texts(heldout=False, limit=limit_chat)


def heldout_texts(n: int = 24) -> list[str]:
    """A fixed held-out set: half stdlib docs of held-out modules, half held-out conversations."""
    docs = pydoc_texts(HELDOUT_MODULES)
    chat = chitchat_texts(heldout=True, limit=n)
    half = n // 2
    # Spread the doc picks over all held-out modules instead of taking the first module only.
    step = max(1, len(docs) // max(1, half))
    picked = docs[::step][:half]
    return picked + chat[: n - len(picked)]


# Fixed chat prompts for parity checks and teacher generations (no personal data).
PROMPTS = (
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Give me three tips for sleeping better.",
    "Explain what a hash function is in one paragraph.",
    "How do I make a cup of tea?",
    "What is the difference between a list and a tuple in Python?",
    "Name three planets of the solar system.",
    "Summarise the plot of Romeo and Juliet in two sentences.",
)


def domain_teacher_data(spec: str, cfg: Any | None = None) -> tuple[str, list[Any]]:
    """``NAME=DATA`` -> (``expert:NAME``, DATA's samples), refusing data the expert was not registered with.

    DATA is read as registration read it (same chunks, same size cap), so the windows are the expert's own.
    Raises ValueError naming the problem.
    """
    from pet.config.schema import PetConfig
    from pet.expert.data import DataError, load_domain_data
    from pet.expert.registry import ExpertRegistry

    name, sep, data = spec.partition("=")
    if not sep or not name or not data:
        raise ValueError(f"--domain-teacher must be NAME=DATA (a registered expert and its data file), got {spec!r}")
    cfg = cfg or PetConfig()
    limits = cfg.expert.data
    try:
        rec = ExpertRegistry.from_config(cfg).get(name)
        dd = load_domain_data(data, max_bytes=limits.max_data_bytes, chunk_chars=limits.chunk_chars)
    except (KeyError, DataError) as err:
        raise ValueError(str(err)) from err
    registered = rec.manifest.get("data_sha256")
    if registered and registered != dd.sha256:
        raise ValueError(f"--domain-teacher: {data} is not the data expert {name!r} was registered with "
                         f"(sha256 {dd.sha256[:12]} != {registered[:12]})")
    return f"expert:{name}", dd.samples
