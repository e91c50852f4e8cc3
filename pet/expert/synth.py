"""T upgrades E: the traditional model writes extra question/answer pairs for a domain.

    pairs, stats = synthesize(t_lm, samples, n=32, embedder=emb)

Seed prompts are excerpts drawn at random from the domain data; T (a local :class:`pet.models.lm.CausalLM`)
is asked for one question a user could ask about the excerpt and its answer, in a fixed
``Question: ... / Answer: ...`` format. Every candidate then passes :func:`filter_pairs`: it must parse,
have sane lengths, not repeat an earlier pair (exact or near-duplicate by embedding), and its embedding
must be at least ``min_similarity`` cosine-similar to the centroid of the domain data. Stats count what
each filter dropped, so a user sees why few pairs survive.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pet.expert.data import Sample

PROMPT = (
    "Here is an excerpt from a document:\n\n{excerpt}\n\n"
    "Write one question that a user could ask about this excerpt, then answer it in a few sentences. "
    "Use exactly this format:\nQuestion: <the question>\nAnswer: <the answer>"
)
_QA = re.compile(r"Question:\s*(?P<q>.+?)\s*\n+\s*Answer:\s*(?P<a>.+)", re.S | re.I)


@dataclass
class SynthStats:
    """Counts of one synthesis run."""

    requested: int = 0
    generated: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"unparsed": 0, "length": 0, "duplicate": 0,
                                                            "off_domain": 0})
    seconds: float = 0.0


def parse_pair(text: str) -> tuple[str, str] | None:
    """Extract (question, answer) from T's output, or None."""
    m = _QA.search(text or "")
    if not m:
        return None
    q = " ".join(m.group("q").split())
    a = m.group("a").strip()
    a = re.split(r"\n\s*Question:", a, maxsplit=1)[0].strip()  # a model that keeps going writes a 2nd pair
    return (q, a) if q and a else None


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def filter_pairs(candidates: Sequence[tuple[str, str]], domain_centroid: np.ndarray | None, embedder: Any,
                 min_similarity: float = 0.3, min_q: int = 8, max_q: int = 400, min_a: int = 10,
                 max_a: int = 2000, near_dup: float = 0.95, stats: SynthStats | None = None
                 ) -> list[tuple[str, str]]:
    """Keep the candidates that pass length, dedupe and domain-similarity filters (order kept)."""
    st = stats or SynthStats()
    stage: list[tuple[str, str]] = []
    seen: set[str] = set()
    for q, a in candidates:
        if not (min_q <= len(q) <= max_q and min_a <= len(a) <= max_a):
            st.dropped["length"] += 1
            continue
        key = _norm(q)
        if key in seen:
            st.dropped["duplicate"] += 1
            continue
        seen.add(key)
        stage.append((q, a))
    if not stage:
        return []
    vecs = embedder.encode([f"{q}\n{a}" for q, a in stage])
    kept: list[tuple[str, str]] = []
    kept_vecs: list[np.ndarray] = []
    for (q, a), v in zip(stage, vecs, strict=True):
        if domain_centroid is not None and float(v @ domain_centroid) < min_similarity:
            st.dropped["off_domain"] += 1
            continue
        if kept_vecs and float(np.max(np.stack(kept_vecs) @ v)) >= near_dup:
            st.dropped["duplicate"] += 1
            continue
        kept.append((q, a))
        kept_vecs.append(v)
    return kept


def domain_centroid(samples: Sequence[Sample], embedder: Any, n: int = 128, seed: int = 0) -> np.ndarray:
    """Unit-length mean embedding of up to ``n`` random samples of the domain."""
    rng = random.Random(seed)
    pick = rng.sample(list(samples), min(n, len(samples)))
    vecs = embedder.encode([s.query(1000) for s in pick])
    c = vecs.mean(0)
    return (c / max(float(np.linalg.norm(c)), 1e-12)).astype(np.float32)


def synthesize(t_lm: Any, samples: Sequence[Sample], n: int, embedder: Any, seed: int = 0,
               max_new_tokens: int = 160, temperature: float = 0.7, min_similarity: float = 0.3,
               batch_size: int = 4, max_rounds: int = 3, log: Callable[[str], None] = print,
               progress: bool = True) -> tuple[list[Sample], SynthStats]:
    """Ask T for ``n`` filtered question/answer pairs seeded by the domain data; returns pair Samples."""
    import time

    from tqdm import tqdm

    st = SynthStats(requested=n)
    if n <= 0:
        return [], st
    t0 = time.perf_counter()
    rng = random.Random(seed)
    centroid = domain_centroid(samples, embedder, seed=seed)
    kept: list[tuple[str, str]] = []
    candidates: list[tuple[str, str]] = []
    bar = tqdm(total=n, desc="T synthesis", unit="pair", disable=not progress, dynamic_ncols=True)
    try:
        for rnd in range(max_rounds):
            # Ask for more than missing: the filters drop a share (measured and reported in stats).
            want = (n - len(kept)) * 2
            for i in range(0, want, batch_size):
                seeds = [rng.choice(samples).query(600) for _ in range(min(batch_size, want - i))]
                outs = t_lm.generate_batch([PROMPT.format(excerpt=s) for s in seeds], max_new_tokens=max_new_tokens,
                                           temperature=temperature, top_p=0.95, seed=seed + rnd * 100_003 + i)
                st.generated += len(outs)
                for o in outs:
                    pair = parse_pair(o.text)
                    if pair is None:
                        st.dropped["unparsed"] += 1
                    else:
                        candidates.append(pair)
            # Re-filter the whole pool so dedupe spans rounds; reset the counters it recomputes.
            for k in ("length", "duplicate", "off_domain"):
                st.dropped[k] = 0
            kept = filter_pairs(candidates, centroid, embedder, min_similarity=min_similarity, stats=st)[:n]
            bar.n = len(kept)
            bar.refresh()
            if len(kept) >= n:
                break
    finally:
        bar.close()
    st.kept = len(kept)
    st.seconds = time.perf_counter() - t0
    log(f"synthesis: {st.generated} generated, {st.kept} kept, dropped {st.dropped}")
    return [Sample(prompt=q, response=a) for q, a in kept], st
