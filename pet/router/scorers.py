"""Linear scorers over the query embedding: ``pregen`` (embedding only, decides before P runs) and ``stacked``
(embedding plus P's confidence features, decides after P ran), and how the fitted router file stores them.

Score convention, shared with every router score: higher = keep on the device, in [0, 1]. Target ``good``: the
score is a logistic P(P's answer is good enough). Target ``gain``: a ridge model predicts g = q_cloud - q_p
(ROUGE-L the cloud's answer would gain over P's, in [-1, 1]) and the score is (1 - g) / 2 clipped to [0, 1], so
the largest predicted gains leave first (:func:`link`). Fitted by :mod:`pet.router.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pet.router.calibrate import FEATURES, features_of

TARGETS = ("good", "gain")  # what an embedding / stacked scorer was trained on (see the module docstring)


def link(z: np.ndarray | float, target: str) -> np.ndarray:
    """Linear model output -> score in [0, 1], higher = keep on device (``good``: sigmoid; ``gain``: (1 - g) / 2)."""
    z = np.asarray(z, dtype=np.float64)
    if target == "good":
        return 1 / (1 + np.exp(-np.clip(z, -30, 30)))
    return np.clip((1 - z) / 2, 0.0, 1.0)


def _vector(d: dict[str, Any], key: str, entry: str) -> np.ndarray:
    """A finite 1-d float vector from ``d[key]``; the error names the entry and the key."""
    try:
        v = np.asarray(d[key], dtype=np.float64)
    except KeyError:
        raise ValueError(f"{entry} entry needs {key!r}") from None
    except (TypeError, ValueError):
        raise ValueError(f"{entry} entry: {key!r} must be a list of numbers") from None
    if v.ndim != 1 or len(v) == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"{entry} entry: {key!r} must be a non-empty list of finite numbers")
    return v


def _scalar(d: dict[str, Any], key: str, entry: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
        raise ValueError(f"{entry} entry: {key!r} must be a finite number, got {v!r}")
    return float(v)


def _target(d: dict[str, Any], entry: str) -> str:
    t = d.get("target", "good")  # files written before the gain target existed hold logistic "good" models
    if t not in TARGETS:
        raise ValueError(f"{entry} entry: 'target' must be one of {', '.join(TARGETS)}, got {t!r}")
    return str(t)


@dataclass
class EmbeddingScorer:
    """Linear model on a query embedding: logistic P(P's answer good enough), or ridge predicted gain (``target``)."""

    w: np.ndarray
    b: float
    target: str = "good"

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Scores [n] for embeddings [n, d]."""
        return link(np.asarray(embeddings, dtype=np.float64) @ self.w + self.b, self.target)

    def __call__(self, embedding: np.ndarray) -> float:
        return float(self.predict(np.asarray(embedding, dtype=np.float64).reshape(1, -1))[0])

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready parameters."""
        kind = "logistic-embedding" if self.target == "good" else "ridge-gain-embedding"
        return {"kind": kind, "target": self.target, "w": [float(v) for v in self.w], "b": float(self.b)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbeddingScorer:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict):
            raise ValueError("pregen entry must be a mapping")
        return cls(_vector(d, "w", "pregen"), _scalar(d, "b", "pregen"), _target(d, "pregen"))


@dataclass
class StackedScorer:
    """Linear model over [query embedding, P's confidence features], each column standardised by mean / scale.

    Column order: the embedding's d dimensions, then :data:`pet.router.calibrate.FEATURES` of P's answer.
    The score is ``link(((x - mean) / scale) @ w + b, target)``: higher = keep P's answer.
    """

    w: np.ndarray
    b: float
    mean: np.ndarray
    scale: np.ndarray
    target: str = "good"

    def __post_init__(self):
        n = len(self.w)
        if n <= len(FEATURES) or self.mean.shape != (n,) or self.scale.shape != (n,):
            raise ValueError(f"stacked entry: 'w', 'mean' and 'scale' must have the same length > {len(FEATURES)}, "
                             f"got {len(self.w)}, {len(self.mean)}, {len(self.scale)}")
        if np.any(self.scale <= 0):
            raise ValueError("stacked entry: 'scale' must be positive")
        if self.target not in TARGETS:
            raise ValueError(f"stacked entry: 'target' must be one of {', '.join(TARGETS)}, got {self.target!r}")

    @property
    def embedding_dim(self) -> int:
        return len(self.w) - len(FEATURES)

    def predict(self, embeddings: np.ndarray, p_features: np.ndarray) -> np.ndarray:
        """Scores [n] for embeddings [n, d] and P's signal features [n, 3]."""
        x = np.hstack([np.asarray(embeddings, dtype=np.float64), np.asarray(p_features, dtype=np.float64)])
        if x.shape[1] != len(self.w):
            raise ValueError(f"the stacked model expects a {self.embedding_dim}-dim embedding, "
                             f"got {x.shape[1] - len(FEATURES)}")
        return link(((x - self.mean) / self.scale) @ self.w + self.b, self.target)

    def __call__(self, embedding: np.ndarray, p_signals: dict[str, Any] | Any) -> float:
        emb = np.asarray(embedding, dtype=np.float64).reshape(1, -1)
        return float(self.predict(emb, np.array([features_of(p_signals)]))[0])

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready parameters."""
        return {"kind": "linear-stacked", "target": self.target, "embedding_dim": self.embedding_dim,
                "signal_features": list(FEATURES), "w": [float(v) for v in self.w], "b": float(self.b),
                "mean": [float(v) for v in self.mean], "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StackedScorer:
        """Inverse of :meth:`to_dict`; errors name the key."""
        if not isinstance(d, dict):
            raise ValueError("stacked entry must be a mapping")
        if "signal_features" in d and list(d["signal_features"]) != list(FEATURES):
            raise ValueError(f"stacked entry: 'signal_features' must be {list(FEATURES)}, "
                             f"got {d['signal_features']!r}")
        out = cls(_vector(d, "w", "stacked"), _scalar(d, "b", "stacked"), _vector(d, "mean", "stacked"),
                  _vector(d, "scale", "stacked"), _target(d, "stacked"))
        if "embedding_dim" in d and d["embedding_dim"] != out.embedding_dim:
            raise ValueError(f"stacked entry: 'embedding_dim' {d['embedding_dim']!r} does not match "
                             f"len(w) - {len(FEATURES)} = {out.embedding_dim}")
        return out
