"""Labelled data for the router: the JSON Lines file ``pet router calibrate`` reads, and ``pet router label``, which
makes one from your own queries with your own tiers (P, E and T answer every query here: no Ray, no gateway).

    pet router label --queries my_queries.txt --out labelled.jsonl    # one query per line
    pet router label --queries mine.jsonl --out labelled.jsonl         # {"query": ..., "reference": ...} a line
    pet router calibrate --data labelled.jsonl --cloud-budget 0.3 --out router.yaml
    # queries without references: pet router calibrate --label agreement ...

In code, with any models that have ``generate`` (a :class:`~pet.models.tier.TierBackend`)::

    records = label_queries(read_queries("mine.txt"), Tiers(p=device_model, t=causal_lm), max_new_tokens=64)
    write_labelled(records, "labelled.jsonl")

The labelled file holds one query a line::

    {"id": "...", "query": "...", "reference": "..." (optional), "domain": "python" | null (optional),
     "p": {"text": "...", "signals": {"mean_logprob": .., "min_token_prob": .., "mean_entropy": ..}},
     "e": {...} (optional: the expert's answer when the query has a domain), "t": {...},
     "embedding": [384 floats] (optional; computed with the configured embedder when the pregen model is fitted)}

How "good enough" is judged from it: :mod:`pet.router.fit`. Every tier answers greedily with the same
``max_new_tokens`` (the device's, which it also sends when it escalates), so the answers are those the
deployed tiers would give. Loading the configured tiers and writing the file is :mod:`pet.calibration`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pet.router.calibrate import features_of

Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------------------------
# The files: queries in, labelled records out


def _numbered_lines(p: Path) -> list[tuple[int, str]]:
    """The non-empty lines of a text file with their 1-based numbers."""
    return [(n, line) for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]


def _json_line(p: Path, n: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{p}:{n}: not JSON: {err.msg}") from None


def read_queries(path: str | Path) -> list[dict[str, Any]]:
    """Queries from a text file (one a line) or JSON Lines (``query``; ``reference`` and ``id`` optional).

    The file is JSON Lines when its first non-empty line starts with ``{``. A query without an id gets
    ``line-<n>``; other keys of a JSON line (``kind``...) are kept in its record. Errors name the line.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"query file {p} does not exist")
    lines = _numbered_lines(p)
    jsonl = bool(lines) and lines[0][1].lstrip().startswith("{")
    out = []
    for n, line in lines:
        if not jsonl:
            out.append({"id": f"line-{n}", "query": line.strip()})
            continue
        q = _json_line(p, n, line)
        if not isinstance(q, dict) or not isinstance(q.get("query"), str) or not q["query"].strip():
            raise ValueError(f"{p}:{n}: needs a non-empty 'query' string")
        if q.get("reference") is not None and not isinstance(q["reference"], str):
            raise ValueError(f"{p}:{n}: 'reference' must be a string")
        out.append({"id": str(q.get("id") or f"line-{n}"), **{k: v for k, v in q.items() if k != "id"}})
    if not out:
        raise ValueError(f"{p}: no queries")
    return out


def read_labelled(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a labelled JSONL file; errors name the line and the missing key."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"labelled data {p} does not exist")
    out = []
    for n, line in _numbered_lines(p):
        rec = _json_line(p, n, line)
        if not isinstance(rec, dict):
            raise ValueError(f"{p}:{n}: expected a JSON object")
        for tier in ("p", "t"):
            if not isinstance(rec.get(tier), dict) or "text" not in rec[tier] or "signals" not in rec[tier]:
                raise ValueError(f"{p}:{n}: needs '{tier}': {{'text': ..., 'signals': {{...}}}}")
            try:
                features_of(rec[tier]["signals"])
            except ValueError as err:
                raise ValueError(f"{p}:{n}: {tier}.signals: {err}") from None
        if rec.get("e") is not None and ("text" not in rec["e"] or "signals" not in rec["e"]):
            raise ValueError(f"{p}:{n}: 'e' must have 'text' and 'signals'")
        out.append(rec)
    if len(out) < 4:
        raise ValueError(f"{p}: {len(out)} labelled records; at least 4 are needed to fit a router")
    return out


def write_labelled(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write records as JSON Lines, atomically (the file :func:`read_labelled` reads)."""
    from pet.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return Path(path)


# ----------------------------------------------------------------------------------------------------------------
# Answering: every tier answers every query


def answer_record(gen: Any) -> dict[str, Any]:
    """A tier's answer as it is stored: text, the answer's confidence signals, and what it cost."""
    return {"text": gen.text, "signals": gen.signals.to_dict(per_token=False),
            "completion_tokens": gen.usage.completion_tokens, "seconds": gen.usage.seconds}


def answer_all(name: str, model: Any, prompts: Sequence[str], max_new_tokens: int, batch: int = 8,
               log: Log = print, every_s: float = 10.0) -> list[dict[str, Any]]:
    """:func:`answer_record` of ``model``'s answer to each prompt, in batches (``generate_batch`` when the model
    has it), with a progress line at most every ``every_s`` seconds and one at the end."""
    generate_batch = getattr(model, "generate_batch", None)
    out: list[dict[str, Any]] = []
    t0 = last = time.monotonic()
    for i in range(0, len(prompts), batch):
        chunk = list(prompts[i:i + batch])
        gens = (generate_batch(chunk, max_new_tokens=max_new_tokens) if generate_batch
                else [model.generate(p, max_new_tokens=max_new_tokens) for p in chunk])
        out.extend(answer_record(g) for g in gens)
        now = time.monotonic()
        if now - last >= every_s or len(out) == len(prompts):
            log(f"[{name}] {len(out)}/{len(prompts)} answered ({now - t0:.0f} s)")
            last = now
    return out


@dataclass
class Experts:
    """The registered domains: ``domain_of`` maps query texts to a domain each (None: no expert); ``load`` gives
    the model of one domain (base + adapter), called once per domain so that one expert at a time is in memory."""

    domain_of: Callable[[Sequence[str]], list[str | None]]
    load: Callable[[str], Any]


@dataclass
class Tiers:
    """The models that answer: P and T (anything with ``generate``) and, when domains are registered, E."""

    p: Any
    t: Any
    experts: Experts | None = None


def label_queries(queries: Sequence[dict[str, Any]], tiers: Tiers, max_new_tokens: int, batch: int = 8,
                  log: Log = print) -> list[dict[str, Any]]:
    """One labelled record per query (module docstring): P's and T's answers, and the expert's where the query
    has a domain. Queries are dicts with ``id`` and ``query`` (:func:`read_queries`); their other keys are kept."""
    texts = [q["query"] for q in queries]
    domains = tiers.experts.domain_of(texts) if tiers.experts else [None] * len(texts)
    records = [{**q, "domain": d} for q, d in zip(queries, domains, strict=True)]
    for tier, model in (("p", tiers.p), ("t", tiers.t)):
        for rec, ans in zip(records, answer_all(tier, model, texts, max_new_tokens, batch, log), strict=True):
            rec[tier] = ans
    for domain in sorted({d for d in domains if d}):
        mine = [i for i, d in enumerate(domains) if d == domain]
        model = tiers.experts.load(domain)
        answers = answer_all(f"e {domain}", model, [texts[i] for i in mine], max_new_tokens, batch, log)
        for i, ans in zip(mine, answers, strict=True):
            records[i]["e"] = ans
        del model
    return records


# ----------------------------------------------------------------------------------------------------------------
# The user's own tiers, from the configuration


def query_embedder(cfg: Any) -> Any:
    """The sentence embedder the router and the domain classifier use (``cfg.embedding``)."""
    from pet.models.embed import embedder_from_config

    return embedder_from_config(cfg)


def query_embeddings(records: Sequence[dict[str, Any]], cfg: Any, log: Log = print) -> np.ndarray:
    """[n, d] query embeddings for the pregen and stacked scorers: the records' own ``embedding`` when every
    record has one, else computed with :func:`query_embedder`."""
    if all("embedding" in r for r in records):
        return np.array([r["embedding"] for r in records], dtype=np.float64)
    log(f"embedding {len(records)} queries for the pregen and stacked models ...")
    return query_embedder(cfg).encode([r["query"] for r in records])
