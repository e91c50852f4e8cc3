"""``Traditional``: the T tier as a Ray Serve deployment (the general model, torch backend).

``generate(payload)`` answers one request; with ``traditional.batching.enabled`` concurrent requests are
merged by ``@serve.batch`` into one left-padded forward pass per step, otherwise each request runs alone
(the baseline the throughput benchmark compares against). ``generate_stream(payload)`` yields text pieces
for SSE (call it through ``handle.options(stream=True)``); it is never batched.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from pet.models.engine import ModelLock, check_payload, generation_result, resolve_payload, run_batch
from pet.questioner.condition import Conditioner


def load_tier_model(model_ref: str, models_dir: str | None, threads: int) -> Any:
    """Load a tier's CausalLM offline with ``threads`` torch threads (set before anything else runs)."""
    import torch

    from pet.models.lm import CausalLM
    from pet.paths import resolve_model, set_offline

    set_offline()
    torch.set_num_threads(threads)
    return CausalLM.load(resolve_model(model_ref, models_dir), threads=threads)


@serve.deployment(name="Traditional")
class Traditional:
    """The general cloud model behind a batched ``generate``."""

    def __init__(self, cfg_dict: dict[str, Any]):
        from pet.config.schema import PetConfig

        self.cfg = PetConfig.model_validate(cfg_dict)
        tc = self.cfg.traditional
        self.lm = load_tier_model(tc.model, self.cfg.models_dir, tc.torch_threads)
        self.conditioner = Conditioner.from_config(self.cfg, self._fingerprint_if_learned())
        self.lock = ModelLock()
        self.batching = tc.batching.enabled
        self._batched.set_max_batch_size(tc.batching.max_batch_size)
        self._batched.set_batch_wait_timeout_s(tc.batching.batch_wait_timeout_s)
        self.batch_sizes: dict[int, int] = {}  # histogram of batch sizes seen, for stats()

    def _fingerprint_if_learned(self) -> str | None:
        """T's fingerprint, which a learned questioner encoder must have been trained on (only computed then)."""
        if self.cfg.questioner.mode != "learned":
            return None
        from pet.paths import resolve_model
        from pet.traditional.versions import model_fingerprint

        return model_fingerprint(resolve_model(self.cfg.traditional.model, self.cfg.models_dir))

    def _run(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self.lock:
            self.batch_sizes[len(payloads)] = self.batch_sizes.get(len(payloads), 0) + 1
            return run_batch(self.lm, payloads)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._run, payloads)

    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Answer one payload; the result carries ``text``, ``signals``, ``usage`` (or ``error``)."""
        t0 = time.perf_counter()
        payload = resolve_payload(self.conditioner.apply(payload), self.cfg.traditional.generation)
        bad = await asyncio.to_thread(check_payload, self.lm, payload)
        if bad is not None:
            return bad
        if self.batching:
            out = await self._batched(payload)
        else:
            out = (await asyncio.to_thread(self._run, [payload]))[0]
        # "model": the T version that answered (a rolling switch of versions is visible per reply)
        return {**out, "model": self.lm.name, "replica_ms": round((time.perf_counter() - t0) * 1e3, 3)}

    async def generate_stream(self, payload: dict[str, Any]) -> AsyncIterator[str]:
        """Yield the answer as text pieces while it is generated (unbatched)."""
        from transformers import TextIteratorStreamer

        payload = resolve_payload(self.conditioner.apply(payload), self.cfg.traditional.generation)
        lm = self.lm
        lm.check_prompt(payload["prompt"])  # PromptError before the stream starts
        text = lm.render(payload["prompt"])
        ids = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        enc = {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]}
        if payload.get("soft_prompt") is not None:  # a questioner's learned profile: embeddings, not ids
            enc = lm.soft_prompt_inputs([text], [payload["soft_prompt"]])
        streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
        sample = payload["temperature"] > 0
        kwargs: dict[str, Any] = dict(max_new_tokens=payload["max_new_tokens"], do_sample=sample,
                                      pad_token_id=lm.tokenizer.pad_token_id, eos_token_id=lm.eos_ids,
                                      streamer=streamer)
        if sample:
            kwargs.update(temperature=payload["temperature"], top_p=payload["top_p"], top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)

        def work() -> None:
            with self.lock, lm.torch.inference_mode():
                lm.model.generate(**enc, **kwargs)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        it = iter(streamer)
        while True:
            piece = await asyncio.to_thread(next, it, None)
            if piece is None:
                break
            if piece:
                yield piece
        await asyncio.to_thread(thread.join)

    def stats(self) -> dict[str, Any]:
        """Replica facts for `pet status` (no request content)."""
        import ray

        return {"pid": os.getpid(), "batching": self.batching, "batch_sizes": dict(self.batch_sizes),
                "model": self.lm.name, "actor_name": ray.get_runtime_context().get_actor_name()}

    def check_health(self) -> None:
        """Serve health check: the model must still be loaded."""
        if self.lm is None:
            raise RuntimeError("model not loaded")


__all__ = ["Traditional", "generation_result", "load_tier_model"]
