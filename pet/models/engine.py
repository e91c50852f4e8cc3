"""Model-side helpers shared by the Traditional and ExpertPool deployments (no Ray imports here).

A *payload* is what the gateway sends a tier: ``{"prompt": str | messages, "max_new_tokens": int,
"temperature": float, "top_p": float}`` with defaults already resolved. :func:`run_batch` turns a list of
payloads into one result dict each, grouping payloads that share generation parameters so every group is
one left-padded forward pass per step (what ``@serve.batch`` hands us).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from pet.config.schema.tiers import GenerationDefaults


def resolve_payload(payload: dict[str, Any], defaults: GenerationDefaults) -> dict[str, Any]:
    """Fill generation defaults of a tier and clamp to its limit (the gateway has validated types)."""
    out = dict(payload)
    out["max_new_tokens"] = min(int(payload.get("max_new_tokens") or defaults.max_new_tokens),
                                defaults.max_new_tokens_limit)
    temp = payload.get("temperature")
    out["temperature"] = float(defaults.temperature if temp is None else temp)
    top_p = payload.get("top_p")
    out["top_p"] = float(defaults.top_p if top_p is None else top_p)
    return out


def generation_result(gen: Any) -> dict[str, Any]:
    """The JSON-ready result of one :class:`pet.models.signals.Generation` (no per-token lists)."""
    s = gen.signals
    return {
        "text": gen.text,
        "finish_reason": gen.finish_reason,
        "signals": {"mean_logprob": s.mean_logprob, "min_token_prob": s.min_token_prob,
                    "mean_entropy": s.mean_entropy},
        "usage": {"prompt_tokens": gen.usage.prompt_tokens, "completion_tokens": gen.usage.completion_tokens,
                  "seconds": gen.usage.seconds},
    }


def _key(p: dict[str, Any]) -> tuple[int, float, float]:
    return int(p["max_new_tokens"]), float(p["temperature"]), float(p["top_p"])


def check_payload(lm: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """``{"error": message}`` when this payload's prompt cannot be rendered and tokenized on its own, else None.

    Called before a request joins a batch: a bad prompt is answered alone and never reaches its neighbours.
    """
    from pet.models.lm import PromptError

    try:
        lm.check_prompt(payload["prompt"])
    except PromptError as err:
        return {"error": str(err)}
    return None


def run_batch(lm: Any, payloads: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Generate for every payload, one ``generate_batch`` call per group of equal parameters; keeps order.

    A payload that fails on its own gets ``{"error": message}``; if a group fails as a whole it is retried one
    by one, so the others in it are still answered.
    """
    results: list[dict[str, Any] | None] = [None] * len(payloads)
    groups: dict[tuple[int, float, float], list[int]] = {}
    for i, p in enumerate(payloads):
        groups.setdefault(_key(p), []).append(i)
    for (max_new, temp, top_p), idx in groups.items():
        prompts = [payloads[i]["prompt"] for i in idx]
        softs = [payloads[i].get("soft_prompt") for i in idx]  # a questioner's soft prompt, see pet.questioner
        try:
            gens = lm.generate_batch(prompts, max_new_tokens=max_new, temperature=temp, top_p=top_p,
                                     soft_prompts=softs if any(s is not None for s in softs) else None)
            for i, g in zip(idx, gens, strict=True):
                results[i] = generation_result(g)
        except Exception:
            # One bad prompt must not sink its neighbours: retry the group one by one.
            for i in idx:
                try:
                    soft = payloads[i].get("soft_prompt")
                    results[i] = generation_result(lm.generate_batch(
                        [payloads[i]["prompt"]], max_new_tokens=max_new, temperature=temp, top_p=top_p,
                        soft_prompts=None if soft is None else [soft])[0])
                except ValueError as err:
                    results[i] = {"error": str(err)}
                except Exception as err:
                    results[i] = {"error": f"generation failed ({type(err).__name__})"}
    return [r if r is not None else {"error": "not generated"} for r in results]


class ModelLock:
    """Serialises forward passes inside one replica: with one torch thread per replica, concurrent passes
    only thrash the cache, and PEFT's active adapter is process-wide state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> ModelLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
