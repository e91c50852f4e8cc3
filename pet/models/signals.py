"""Confidence signals and usage shared by every tier (numpy only, so the device runtime can use it).

A generation reports, per generated token, the log-probability of the chosen token and the entropy of the
next-token distribution (both from the raw, untempered logits). The router's calibrators consume the
summary: mean log-prob, min token probability and mean entropy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class ConfidenceSignals:
    """Summary of per-token confidence of one generation."""

    token_logprobs: list[float] = field(default_factory=list)
    token_entropies: list[float] = field(default_factory=list)
    mean_logprob: float = 0.0
    min_token_prob: float = 1.0
    mean_entropy: float = 0.0

    @classmethod
    def from_tokens(cls, logprobs: list[float], entropies: list[float]) -> ConfidenceSignals:
        """Build from per-token log-probs and entropies (empty lists give neutral values)."""
        if not logprobs:
            return cls()
        return cls(
            token_logprobs=[float(x) for x in logprobs],
            token_entropies=[float(x) for x in entropies],
            mean_logprob=float(np.mean(logprobs)),
            min_token_prob=float(math.exp(min(logprobs))),
            mean_entropy=float(np.mean(entropies)) if entropies else 0.0,
        )

    def features(self) -> list[float]:
        """Fixed-length feature vector for calibrators: [mean_logprob, min_token_prob, mean_entropy]."""
        return [self.mean_logprob, self.min_token_prob, self.mean_entropy]

    def to_dict(self, per_token: bool = True) -> dict:
        """JSON-ready dict; ``per_token=False`` drops the per-token lists."""
        d = asdict(self)
        if not per_token:
            d.pop("token_logprobs")
            d.pop("token_entropies")
        return d


@dataclass
class Usage:
    """Token counts and wall time of one generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


@dataclass
class Generation:
    """The result of ``generate``: text, token ids, confidence signals and usage."""

    text: str
    token_ids: list[int]
    signals: ConfidenceSignals
    usage: Usage
    finish_reason: str = "length"  # "stop" (EOS or stop string) or "length"

    def to_dict(self, per_token: bool = True) -> dict:
        """JSON-ready dict."""
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "signals": self.signals.to_dict(per_token=per_token),
            "usage": asdict(self.usage),
        }


def logprobs_and_entropy(logits: np.ndarray, token: int) -> tuple[float, float]:
    """Log-prob of ``token`` and entropy (nats) of the softmax of a 1-D logits vector."""
    x = logits.astype(np.float64)
    m = x.max()
    lse = m + math.log(np.exp(x - m).sum())
    logp = x - lse
    p = np.exp(logp)
    return float(logp[token]), float(-(p * logp).sum())
