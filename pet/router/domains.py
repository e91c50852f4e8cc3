"""Which expert domain does a query belong to? A MiniLM-embedding classifier over registered exemplars.

    clf = DomainClassifier.from_registry(reg, embedder_from_config(cfg), floor=cfg.router.domain_similarity_floor)
    clf.classify("How do I open a file with pathlib?")   # ("python", 0.61)
    clf.classify("Who painted the Mona Lisa?")            # (None, 0.12) -> no expert, use T

Two scoring methods (compared side by side in ``benchmarks/domain_routing.py``):

- ``centroid``: cosine similarity to the L2-normalised mean exemplar of each domain.
- ``knn``: mean cosine similarity of the ``k`` most similar exemplars of each domain.
- ``relative``: the centroid similarity divided by the domain's own mean exemplar-to-centroid similarity, so a
  diffuse domain (casual chat) and a tight one (API questions) are judged on the same scale; the floor is then
  a fraction of a typical exemplar's similarity (e.g. 0.6), not a cosine.

The best domain wins if its score reaches ``floor``; otherwise the answer is ``None`` (out of domain).
A classifier built with :meth:`from_registry` re-reads the registry when its domains change (checked at
most every ``refresh_s`` seconds), so a domain registered while a gateway runs is routed to without a
redeploy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pet.expert.registry import CorruptAdapterError, ExpertRegistry, UnknownDomainError

METHODS = ("centroid", "knn", "relative")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


@dataclass(frozen=True)
class _Index:
    """Everything scoring reads, built together so it can be replaced with one reference."""

    exemplars: dict[str, np.ndarray]
    domains: tuple[str, ...]
    centroids: np.ndarray
    spread: np.ndarray

    @classmethod
    def build(cls, exemplars: dict[str, np.ndarray]) -> _Index:
        # Domains with no exemplars cannot be routed to by similarity; they stay reachable by explicit tier "e".
        ex = {d: _unit(v) for d, v in sorted(exemplars.items()) if len(v)}
        centroids = _unit(np.stack([v.mean(0) for v in ex.values()])) if ex else np.zeros((0, 1), np.float32)
        # How close a domain's own exemplars sit to its centroid (its spread), for the relative method.
        spread = np.array([max(float((e @ c).mean()), 1e-3) for e, c in zip(ex.values(), centroids, strict=True)],
                          dtype=np.float32)
        return cls(ex, tuple(ex), centroids, spread)


class DomainClassifier:
    """Nearest-centroid or k-NN domain classifier with a similarity floor ("none" for out-of-domain)."""

    def __init__(self, exemplars: dict[str, np.ndarray], embedder: Any = None, floor: float = 0.35,
                 method: str = "centroid", k: int = 5):
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if k < 1:
            raise ValueError("k must be >= 1")
        self.embedder = embedder
        self.floor = float(floor)
        self.method = method
        self.k = int(k)
        self._registry: ExpertRegistry | None = None
        self._stamp: tuple = ()
        self._checked = 0.0
        self.refresh_s = 2.0
        self._set(exemplars)

    def _set(self, exemplars: dict[str, np.ndarray]) -> None:
        # Built whole, then published with one assignment: a reader on another thread sees the old index or
        # the new one, never new domains with old centroids (a registration during auto traffic did that).
        self._index = _Index.build(exemplars)

    @property
    def exemplars(self) -> dict[str, np.ndarray]:
        """Unit-length exemplar embeddings per routable domain."""
        return self._index.exemplars

    @property
    def domains(self) -> list[str]:
        """Routable domains (those with exemplars), sorted."""
        return list(self._index.domains)

    @property
    def centroids(self) -> np.ndarray:
        """Unit-length mean exemplar per domain, in the order of :attr:`domains`."""
        return self._index.centroids

    @property
    def spread(self) -> np.ndarray:
        """Mean exemplar-to-centroid similarity per domain (the relative method's scale)."""
        return self._index.spread

    @classmethod
    def from_registry(cls, registry: ExpertRegistry, embedder: Any = None, floor: float = 0.35,
                      method: str = "centroid", k: int = 5) -> DomainClassifier:
        """Build from every registered domain's exemplars; follows later registry changes."""
        clf = cls({}, embedder, floor, method, k)
        clf._registry = registry
        clf.reload()
        return clf

    # ------------------------------------------------------------------------------------------------------------
    # Hot reload

    def _registry_stamp(self) -> tuple:
        assert self._registry is not None
        return tuple((r.name, r.fingerprint) for r in self._registry.records())

    def reload(self) -> bool:
        """Re-read the registry now; returns True when the set of domains or their files changed."""
        if self._registry is None:
            return False
        self._checked = time.monotonic()
        stamp = self._registry_stamp()
        if stamp == self._stamp:
            return False
        data = {}
        for name, _ in stamp:
            try:
                data[name] = self._registry.exemplars(name)
            except (UnknownDomainError, CorruptAdapterError, OSError, ValueError):
                continue  # removed meanwhile or corrupted: not routable, never fatal
        self._set(data)
        self._stamp = stamp
        return True

    def _maybe_reload(self) -> None:
        if self._registry is not None and time.monotonic() - self._checked >= self.refresh_s:
            self.reload()

    # ------------------------------------------------------------------------------------------------------------
    # Scoring

    def scores_embedding(self, vec: np.ndarray) -> dict[str, float]:
        """Similarity of one embedding to every domain (no floor applied)."""
        self._maybe_reload()
        idx = self._index  # one snapshot for the whole computation
        if not idx.domains:
            return {}
        v = _unit(np.asarray(vec, dtype=np.float32).reshape(-1))
        if self.method in ("centroid", "relative"):
            sims = idx.centroids @ v
            if self.method == "relative":
                sims = sims / idx.spread
            return {d: float(s) for d, s in zip(idx.domains, sims, strict=True)}
        out = {}
        for d, ex in idx.exemplars.items():
            s = ex @ v
            top = np.sort(s)[-min(self.k, len(s)):]
            out[d] = float(top.mean())
        return out

    def classify_embedding(self, vec: np.ndarray) -> tuple[str | None, float]:
        """(best domain or None when its score is below the floor, best score)."""
        scores = self.scores_embedding(vec)
        if not scores:
            return None, 0.0
        best = max(scores, key=scores.__getitem__)
        score = scores[best]
        return (best if score >= self.floor else None), score

    def classify(self, text: str) -> tuple[str | None, float]:
        """Embed ``text`` with the embedder and classify it."""
        return self.classify_batch([text])[0]

    def classify_batch(self, texts: Sequence[str]) -> list[tuple[str | None, float]]:
        """Classify several texts with one embedding pass."""
        if self.embedder is None:
            raise RuntimeError("this DomainClassifier has no embedder; use classify_embedding")
        if not texts:
            return []
        vecs = self.embedder.encode(list(texts))
        return [self.classify_embedding(v) for v in vecs]
