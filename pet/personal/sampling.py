"""Next-token choice from a logits vector (numpy only): greedy, or temperature + top-p (nucleus) sampling."""

from __future__ import annotations

import numpy as np


def choose_token(logits: np.ndarray, temperature: float = 0.0, top_p: float = 1.0,
                 rng: np.random.Generator | None = None) -> int:
    """Greedy when ``temperature == 0``; otherwise sample from the tempered softmax cut to mass ``top_p``."""
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    if not 0 < top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")
    if temperature == 0:
        return int(np.argmax(logits))
    rng = rng or np.random.default_rng()
    x = logits.astype(np.float64) / temperature
    x -= x.max()
    p = np.exp(x)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        cum = np.cumsum(p[order])
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        keep = order[: int(np.searchsorted(cum, top_p) + 1)]
        q = p[keep] / p[keep].sum()
        return int(keep[rng.choice(len(keep), p=q)])
    return int(rng.choice(len(p), p=p))
