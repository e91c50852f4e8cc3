"""Train the questioner encoder over a frozen T on chitchat-dataset questioners (`pet questioner train`).

Each step takes one cluster of similar questions (k-means over the MiniLM embeddings of the questions) and
optimises two terms:

- language modelling: the partner's real reply, teacher-forced under T with the encoder's soft prompt in front
  (only the encoder learns; T is frozen);
- questioner-contrastive (InfoNCE): the questioner tower's code of each dialogue's question is pulled towards
  its own questioner's profile code and pushed from the other questioners asking similar questions.

Profiles are built exactly as on the device (:mod:`pet.questioner.profile`): the mean embedding of the
questioner's earlier messages and the exemplars nearest the question. Held-out questioners never enter training.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pet.questioner.data import Dialogue, Questioner, load_questioners, split_questioners
from pet.questioner.profile import make_profile, nearest, unit
from pet.questioner.score import Row, encode_row, reply_nll

Progress = Callable[[str], None]


def embed_cached(embedder: Any, texts: Sequence[str], cache: Path | None) -> np.ndarray:
    """``embedder.encode(texts)``, kept as ``<cache>/<sha256 of the texts>.npy`` for the next run."""
    if cache is None:
        return _encode_by_length(embedder, texts)
    key = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()[:32]
    path = cache / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    vecs = _encode_by_length(embedder, texts)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{key}.{time.time_ns()}.npy"
    np.save(tmp, vecs)
    tmp.replace(path)
    return vecs


def _encode_by_length(embedder: Any, texts: Sequence[str]) -> np.ndarray:
    """Encode in order of length (batches pad less), returned in the original order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vecs = embedder.encode([texts[i] for i in order])
    out = np.empty_like(vecs)
    out[np.asarray(order, dtype=int)] = vecs
    return out


@dataclass
class Profiled:
    """A questioner with their history embedded: what the device would have."""

    q: Questioner
    texts: list[str]
    vectors: np.ndarray
    embedding: np.ndarray


@dataclass
class Example:
    """A dialogue ready for scoring or training: who asked, the question's vector, the exemplars, the tokens."""

    dialogue: Dialogue
    query_vec: np.ndarray
    row: Row | None = None


def profile_questioners(qs: Sequence[Questioner], embedder: Any, max_messages: int,
                        cache: Path | None) -> dict[str, Profiled]:
    """Every questioner's last ``max_messages`` history messages, embedded, and their profile embedding."""
    texts = [q.history[-max_messages:] for q in qs]
    flat = [t for ts in texts for t in ts]
    vecs = embed_cached(embedder, flat, cache)
    out, at = {}, 0
    for q, ts in zip(qs, texts, strict=True):
        v = vecs[at:at + len(ts)]
        at += len(ts)
        out[q.id] = Profiled(q, ts, v, unit(v.mean(0)))
    return out


def profile_for(p: Profiled, query: str, query_vec: np.ndarray, k: int, max_chars: int) -> Any:
    """The device's profile of ``p`` for one question (exemplars nearest it, never the question itself)."""
    idx = [i for i in nearest(query_vec, p.vectors, k + 1) if p.texts[i].strip() != query.strip()][:k]
    return make_profile(p.embedding, [p.texts[i] for i in idx], p.vectors[idx] if idx else None, max_chars)


def examples_for(dialogues: Sequence[Dialogue], embedder: Any, cache: Path | None) -> list[Example]:
    """Dialogues with their question embedded."""
    vecs = embed_cached(embedder, [d.query for d in dialogues], cache)
    return [Example(d, v) for d, v in zip(dialogues, vecs, strict=True)]


def pick_dialogues(q: Questioner, n: int, seed: int) -> list[Dialogue]:
    """Up to ``n`` of ``q``'s dialogues with a non-empty question and reply (seeded, order kept)."""
    ok = [d for d in q.dialogues if d.query.strip() and d.reply.strip()]
    if len(ok) <= n:
        return ok
    keep = sorted(random.Random(f"{seed}:{q.id}").sample(range(len(ok)), n))
    return [ok[i] for i in keep]


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 15) -> np.ndarray:
    """Cluster labels of the unit rows of ``x`` (spherical k-means)."""
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    centres = x[rng.choice(len(x), k, replace=False)]
    labels = np.zeros(len(x), dtype=int)
    for _ in range(iters):
        labels = np.argmax(x @ centres.T, axis=1)
        for c in range(k):
            if np.any(labels == c):
                centres[c] = unit(x[labels == c].mean(0))
    return labels


# ----------------------------------------------------------------------------------------------------------------
# Training


def _tensors(torch: Any, batch: Sequence[Example], profiled: dict[str, Profiled], k: int, max_chars: int
             ) -> tuple[Any, Any]:
    prof, ex = [], []
    for e in batch:
        p = profile_for(profiled[e.dialogue.questioner], e.dialogue.query, e.query_vec, k, max_chars)
        prof.append(p.vector())
        ex.append(p.exemplar_vector())
    return torch.tensor(np.stack(prof)), torch.tensor(np.stack(ex))


def train_encoder(lm: Any, examples: list[Example], profiled: dict[str, Profiled], qcfg: Any,
                  progress: Progress = print) -> tuple[Any, dict[str, Any]]:
    """Train a fresh encoder on ``examples`` (rows encoded); returns it and the training facts."""
    import torch

    from pet.questioner.encoder import build_encoder, init_from_tokens

    tc = qcfg.train
    torch.manual_seed(tc.seed)
    rng = random.Random(tc.seed)
    for p in lm.model.parameters():
        p.requires_grad_(False)
    emb = lm.model.get_input_embeddings()
    enc = build_encoder(qcfg.embedding_dim, tc.hidden, emb.weight.shape[1], qcfg.soft_tokens)
    start_ids = lm.tokenizer(" Reply to this person", add_special_tokens=False)["input_ids"]
    start_ids = (start_ids * qcfg.soft_tokens)[:qcfg.soft_tokens]
    init_from_tokens(enc, emb.weight[torch.tensor(start_ids)].detach())
    opt = torch.optim.AdamW(enc.parameters(), lr=tc.lr, weight_decay=0.01)
    labels = kmeans(np.stack([e.query_vec for e in examples]), tc.clusters, tc.seed)
    clusters = [[i for i in np.flatnonzero(labels == c)] for c in range(labels.max() + 1)]
    clusters = [c for c in clusters if len({examples[i].dialogue.questioner for i in c}) >= 2]
    weights = [len(c) for c in clusters]
    t0, history = time.perf_counter(), []
    for step in range(1, tc.steps + 1):
        members = rng.choices(clusters, weights)[0]
        sample = [examples[i] for i in rng.sample(members, min(tc.contrastive_batch, len(members)))]
        lm_batch = sample[:tc.batch_size]
        prof, ex = _tensors(torch, lm_batch, profiled, qcfg.exemplars, qcfg.max_exemplar_chars)
        sums, counts = reply_nll(lm, [e.row for e in lm_batch], soft=enc(prof, ex), grad=True)
        loss_lm = sums.sum() / counts.sum()
        loss_c = _contrastive(torch, enc, sample, profiled, tc.temperature)
        loss = loss_lm + tc.contrastive_weight * loss_c
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((loss_lm.item(), float(loss_c.detach())))
        if step == 1 or step % 10 == 0 or step == tc.steps:
            el = time.perf_counter() - t0
            recent = history[-10:]
            left = el / step * (tc.steps - step)
            progress(f"step {step}/{tc.steps}  lm {np.mean([h[0] for h in recent]):.3f}  contrastive "
                     f"{np.mean([h[1] for h in recent]):.3f}  {el:.0f}s elapsed, ~{left:.0f}s left")
    facts = {"steps": tc.steps, "train_examples": len(examples), "clusters": len(clusters),
             "final_lm_loss": float(np.mean([h[0] for h in history[-10:]])),
             "final_contrastive_loss": float(np.mean([h[1] for h in history[-10:]])),
             "seconds": round(time.perf_counter() - t0, 1)}
    return enc.eval(), facts


def _contrastive(torch: Any, enc: Any, sample: Sequence[Example], profiled: dict[str, Profiled], tau: float) -> Any:
    """InfoNCE: each question's code against the profile codes of the questioners in this cluster sample."""
    who = sorted({e.dialogue.questioner for e in sample})
    if len(who) < 2:
        return torch.zeros(())
    anchors = enc.code(torch.tensor(np.stack([e.query_vec for e in sample])))
    keys = enc.code(torch.tensor(np.stack([profiled[w].embedding for w in who])))
    target = torch.tensor([who.index(e.dialogue.questioner) for e in sample])
    return torch.nn.functional.cross_entropy(anchors @ keys.T / tau, target)


# ----------------------------------------------------------------------------------------------------------------
# The command


@dataclass
class Prepared:
    """Questioners split and embedded: what training and the benchmark share."""

    train_ids: list[str]
    heldout_ids: list[str]
    profiled: dict[str, Profiled]
    train_examples: list[Example]


def prepare(lm: Any, embedder: Any, qcfg: Any, cache: Path | None = None, progress: Progress = print) -> Prepared:
    """Load chitchat-dataset, split questioners, embed histories and training questions, encode rows."""
    tc = qcfg.train
    qs = load_questioners(tc.min_conversations, tc.context_turns)
    train_ids, held = split_questioners(list(qs), tc.heldout, tc.questioners, tc.seed)
    progress(f"{len(qs)} questioners with >= {tc.min_conversations} conversations: {len(train_ids)} train, "
             f"{len(held)} held out")
    profiled = profile_questioners([qs[i] for i in train_ids + held], embedder, tc.profile_messages, cache)
    progress(f"{sum(len(p.texts) for p in profiled.values())} history messages embedded")
    dialogues = [d for i in train_ids for d in pick_dialogues(qs[i], tc.per_questioner, tc.seed)]
    examples = examples_for(dialogues, embedder, cache)
    for e in examples:
        e.row = encode_row(lm, e.dialogue.messages(), e.dialogue.reply, tc.max_prompt_tokens, tc.max_reply_tokens)
    examples = [e for e in examples if e.row.reply]
    progress(f"{len(examples)} training dialogues embedded and tokenized")
    return Prepared(train_ids, held, profiled, examples)


def train_command(cfg: Any, out: str | Path, base_fingerprint: str, replace: bool = False,
                  cache: Path | None = None, progress: Progress = print) -> dict[str, Any]:
    """`pet questioner train`: prepare, train over T (frozen), write the artifact atomically; its manifest.

    ``base_fingerprint`` is T's (``pet.traditional.versions.model_fingerprint``): the tiers refuse the encoder
    on any other T.
    """
    import torch

    from pet.models.embed import embedder_from_config
    from pet.models.lm import CausalLM
    from pet.paths import resolve_model
    from pet.questioner.encoder import save_encoder

    torch.set_num_threads(cfg.traditional.torch_threads)
    folder = resolve_model(cfg.traditional.model, cfg.models_dir)
    lm = CausalLM.load(folder, threads=cfg.traditional.torch_threads)
    prep = prepare(lm, embedder_from_config(cfg), cfg.questioner, cache=cache, progress=progress)
    enc, facts = train_encoder(lm, prep.train_examples, prep.profiled, cfg.questioner, progress)
    tc = cfg.questioner.train
    facts.update(train_questioners=sorted(prep.train_ids), split_seed=tc.seed, heldout=tc.heldout,
                 exemplars=cfg.questioner.exemplars, base_model=str(cfg.traditional.model))
    return save_encoder(enc, out, base_fingerprint, facts, replace=replace)

