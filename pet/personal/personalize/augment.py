"""Cloud-side data augmentation: prompt T with a user's shared samples, filter what it writes.

The same logic runs in two places: inside the ``Augmenter`` Serve deployment (which calls the Traditional
deployment through its handle) and in-process on a machine without a gateway (``pet personalize`` with no
``--url``; the benchmark), where T is a local :class:`pet.models.lm.CausalLM`.

    prompts = build_prompts(shared, n=8, seed=0)          # one chat prompt per candidate
    texts = [t.generate(p, temperature=0.9).text for p in prompts]
    kept, stats = filter_samples_with_stats(texts, shared, embedder)

Filtering keeps a candidate only if it is the right length, not a duplicate, on the user's topics (MiniLM
cosine to the nearest shared sample at least ``min_similarity``) and not a copy (cosine below
``max_similarity``, no shared word n-gram of ``max_ngram`` words, not contained in a shared sample).
No text is ever logged here: stats are counts only.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from pet.config.schema.personal import AugmentFilterConfig, PersonalizationConfig

# Few-shot as earlier chat turns: a small instruct model copies the form of its own earlier answers far more
# reliably than it follows a written instruction to imitate someone (which it answers like an assistant).
SYSTEM = "You write short, casual chat messages exactly in the style of the messages you wrote before."
ASK = "Write another chat message."

# Chatty prefixes a small instruct model puts before the message it was asked for.
_PREFIX = re.compile(r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is)[^:\n]*:|new message:|message:|reply:)\s*", re.I)
_WORD = re.compile(r"[a-z0-9']+")


class AugmentRequestError(ValueError):
    """An augment payload is malformed (message says which field)."""


# ----------------------------------------------------------------------------------------------------------------
# Prompts


def build_prompts(shared: list[str], n: int, seed: int, examples_per_prompt: int = 5) -> list[list[dict]]:
    """``n`` chat prompts, each showing T a seeded random subset of the shared samples as its own earlier turns."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if n and not shared:
        raise ValueError("no shared samples to imitate")
    rng = random.Random(seed)
    k = min(examples_per_prompt, len(shared))
    prompts = []
    for _ in range(n):
        turns = [{"role": "system", "content": SYSTEM}]
        for s in rng.sample(shared, k):
            turns += [{"role": "user", "content": ASK}, {"role": "assistant", "content": s.strip()}]
        prompts.append(turns + [{"role": "user", "content": ASK}])
    return prompts


def clean_candidate(text: str) -> str:
    """First non-empty line of a generation, without chatty prefixes, list bullets or wrapping quotes."""
    for line in text.strip().splitlines():
        line = _PREFIX.sub("", line.strip()).strip()
        line = line.lstrip("-*• ").strip()
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
            line = line[1:-1].strip()
        if line:
            return line
    return ""


# ----------------------------------------------------------------------------------------------------------------
# Filtering


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def filter_samples_with_stats(candidates: Sequence[str], shared: Sequence[str], embedder: Any,
                              cfg: AugmentFilterConfig | None = None,
                              limit: int | None = None) -> tuple[list[str], dict[str, int]]:
    """Filtered samples (at most ``limit``) and per-reason drop counts; see the module docstring."""
    cfg = cfg or AugmentFilterConfig()
    stats = {"candidates": len(candidates), "empty": 0, "length": 0, "duplicate": 0, "verbatim": 0,
             "ngram_overlap": 0, "off_topic": 0, "near_copy": 0, "over_limit": 0, "kept": 0}
    shared_norm = [" ".join(_words(s)) for s in shared]
    shared_grams: set[tuple[str, ...]] = set()
    for s in shared:
        shared_grams |= _ngrams(_words(s), cfg.max_ngram)
    seen: set[str] = set()
    survivors: list[str] = []
    for raw in candidates:
        text = clean_candidate(raw)
        norm = " ".join(_words(text))
        if not norm:
            stats["empty"] += 1
        elif not cfg.min_chars <= len(text) <= cfg.max_chars:
            stats["length"] += 1
        elif norm in seen:
            stats["duplicate"] += 1
        elif any(norm == s or (len(norm) >= 12 and norm in s) for s in shared_norm):
            stats["verbatim"] += 1
        elif _ngrams(norm.split(), cfg.max_ngram) & shared_grams:
            stats["ngram_overlap"] += 1
        else:
            seen.add(norm)
            survivors.append(text)
    kept: list[str] = []
    if survivors and shared:
        sim = embedder.encode(survivors) @ embedder.encode(list(shared)).T
        best = np.asarray(sim).max(axis=1)
        for text, b in zip(survivors, best, strict=True):
            if b < cfg.min_similarity:
                stats["off_topic"] += 1
            elif b >= cfg.max_similarity:
                stats["near_copy"] += 1
            elif limit is not None and len(kept) >= limit:
                stats["over_limit"] += 1
            else:
                kept.append(text)
    stats["kept"] = len(kept)
    return kept, stats


def filter_samples(candidates: Sequence[str], shared: Sequence[str], embedder: Any,
                   cfg: AugmentFilterConfig | None = None, limit: int | None = None) -> list[str]:
    """Interface 6: the kept samples of :func:`filter_samples_with_stats`."""
    return filter_samples_with_stats(candidates, shared, embedder, cfg, limit)[0]


# ----------------------------------------------------------------------------------------------------------------
# The request, shared by the Serve deployment and the in-process path


def parse_request(payload: Any, cfg: PersonalizationConfig) -> tuple[list[str], int, int]:
    """Validate ``{"shared": [str], "n": int, "seed": int}``; returns (shared, n, seed)."""
    if not isinstance(payload, dict):
        raise AugmentRequestError("augment payload must be a JSON object")
    unknown = set(payload) - {"shared", "n", "seed"}
    if unknown:
        raise AugmentRequestError(f"unknown augment field(s): {', '.join(sorted(unknown))}")
    shared = payload.get("shared")
    if not isinstance(shared, list) or not all(isinstance(s, str) for s in shared):
        raise AugmentRequestError("'shared' must be a list of strings")
    shared = [s.strip() for s in shared if s.strip()]
    if not shared:
        raise AugmentRequestError("'shared' has no non-empty samples")
    if len(shared) > cfg.max_shared:
        raise AugmentRequestError(f"'shared' has {len(shared)} samples; the limit is {cfg.max_shared}")
    n = payload.get("n", cfg.synthetic_default)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= cfg.synthetic_max:
        raise AugmentRequestError(f"'n' must be an integer in [0, {cfg.synthetic_max}]")
    seed = payload.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AugmentRequestError("'seed' must be an integer")
    return shared, n, seed


def generation_payloads(shared: list[str], n: int, seed: int, cfg: PersonalizationConfig,
                        round_index: int = 0) -> list[dict[str, Any]]:
    """Tier payloads (Traditional's ``generate`` format) for one round of candidates."""
    count = max(1, int(round(n * cfg.oversample))) if n else 0
    prompts = build_prompts(shared, count, seed * 1000 + round_index, cfg.examples_per_prompt)
    return [{"prompt": p, "max_new_tokens": cfg.gen_max_new_tokens, "temperature": cfg.gen_temperature,
             "top_p": cfg.gen_top_p} for p in prompts]


def augment_local(payload: dict[str, Any], lm: Any, embedder: Any, cfg: PersonalizationConfig,
                  rounds: int = 2, progress: Any = None) -> dict[str, Any]:
    """Run the Augmenter logic in this process with a local T (:class:`CausalLM`); same reply shape."""
    shared, n, seed = parse_request(payload, cfg)
    kept: list[str] = []
    total: dict[str, int] = {"candidates": 0, "kept": 0}
    candidates: list[str] = []
    done = 0
    for r in range(rounds):
        if len(kept) >= n:
            break
        done += 1
        batch = generation_payloads(shared, n - len(kept), seed, cfg, r)
        for i in range(0, len(batch), 8):
            chunk = batch[i:i + 8]
            gens = lm.generate_batch([p["prompt"] for p in chunk], max_new_tokens=cfg.gen_max_new_tokens,
                                     temperature=cfg.gen_temperature, top_p=cfg.gen_top_p,
                                     seed=seed * 7919 + r * 104729 + i)
            candidates.extend(g.text for g in gens)
            if progress is not None:
                progress(len(chunk))
        kept, stats = filter_samples_with_stats(candidates, shared, embedder, cfg.filter, limit=n)
        total = stats
    total["rounds"] = done
    return {"samples": kept[:n], "stats": total}
