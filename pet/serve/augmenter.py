"""``Augmenter``: the cloud side of personalisation as a Ray Serve deployment (behind ``POST /v1/augment``).

Bound by :mod:`pet.serve.app` as ``Augmenter.bind(cfg_dict, traditional_handle)``. ``augment(payload)``
takes ``{"shared": [str], "n": int, "seed": int}`` (the user's shared samples, already opened from the
device's envelope by the gateway route), prompts the Traditional deployment through its handle with
:func:`pet.personal.personalize.augment.build_prompts` (concurrent calls, so Traditional's ``@serve.batch`` merges
them), and filters the candidates with MiniLM (:func:`pet.personal.personalize.augment.filter_samples_with_stats`).
It returns ``{"samples": [str], "stats": {counts}}``. It logs counts only, never text.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

log = logging.getLogger(__name__)


@serve.deployment(name="Augmenter")
class Augmenter:
    """Generates filtered synthetic samples in a user's style with T (via ``traditional_handle``)."""

    def __init__(self, cfg_dict: dict[str, Any], traditional_handle: Any, rounds: int = 2):
        import torch

        from pet.config.schema import PetConfig
        from pet.models.embed import embedder_from_config

        torch.set_num_threads(1)  # two torch threads per replica fight each other on 2 cores
        self.cfg = PetConfig.model_validate(cfg_dict)
        self.pcfg = self.cfg.personalization
        self.traditional = traditional_handle
        self.rounds = rounds
        self.embedder = embedder_from_config(self.cfg)
        self.requests = 0

    async def _candidates(self, payloads: list[dict[str, Any]]) -> list[str]:
        replies = await asyncio.gather(*(self.traditional.generate.remote(p) for p in payloads))
        return [r["text"] for r in replies if isinstance(r, dict) and isinstance(r.get("text"), str)]

    async def augment(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``{"shared", "n", "seed"}`` -> ``{"samples", "stats"}``; ValueError on a bad payload."""
        from pet.personal.personalize.augment import filter_samples_with_stats, generation_payloads, parse_request

        shared, n, seed = parse_request(payload, self.pcfg)
        self.requests += 1
        kept: list[str] = []
        candidates: list[str] = []
        stats: dict[str, int] = {"candidates": 0, "kept": 0}
        rounds = 0
        for r in range(self.rounds if n else 0):
            if len(kept) >= n:
                break
            rounds += 1
            candidates += await self._candidates(generation_payloads(shared, n - len(kept), seed, self.pcfg, r))
            kept, stats = await asyncio.to_thread(
                filter_samples_with_stats, candidates, shared, self.embedder, self.pcfg.filter, n)
        stats["rounds"] = rounds
        log.info("augment: %d shared, %d asked, %d kept of %d candidates", len(shared), n, len(kept),
                 stats.get("candidates", 0))
        return {"samples": kept[:n], "stats": stats}

    def check_health(self) -> None:
        """Serve health check: the embedder is loaded."""
        if self.embedder is None:
            raise RuntimeError("embedder not loaded")
