"""What the gateway does with one request: choose tier and domain, call the tiers, fall back, count.

:class:`TierCaller` is the Ray-free half of the Gateway deployment: it holds the DeploymentHandles of T
and E, the expert registry and the domain chooser. Tier ``"t"`` goes to T; ``"e"`` to the named (or
classified) domain's adapter; ``"auto"`` picks a domain with the router (``pet.router.cloud.CloudRouter``
over the registry's ``DomainClassifier``) and escalates E -> T when the router finds the
expert's answer not good enough. An expert that fails or times out is answered from T with
``fallback: true`` and a reason.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from pet.serve.metrics import RequestTimer, gateway_metrics
from pet.serve.schemas import ApiError, GenerateRequest, Tier, parse_generate

log = logging.getLogger("ray.serve")


REPLICA_DEATH = frozenset({"ActorDiedError", "RayActorError", "ActorUnavailableError", "ActorUnschedulableError"})
PROBE_PERIOD_S = 0.5


def replica_died(err: BaseException) -> bool:
    """Whether ``err`` says the replica serving a call died or became unreachable (matched by class name)."""
    return bool({c.__name__ for c in type(err).__mro__} & REPLICA_DEATH)


def fallback_reason(err: BaseException) -> str:
    """A short, fixed reason for an expert failure (used in responses and metric labels)."""
    names = {c.__name__ for c in type(err).__mro__}
    text = str(err)
    if isinstance(err, asyncio.TimeoutError | TimeoutError) or "GetTimeoutError" in names:
        return "timeout"
    if "CorruptAdapterError" in names or "CorruptAdapterError" in text:
        return "corrupt_adapter"
    if "BackPressureError" in names:
        return "overloaded"
    if names & REPLICA_DEATH:
        return "replica_died"
    if "ExpertUnavailable" in names:
        return "expert_unavailable"
    if "UnknownDomainError" in names or "UnknownDomainError" in text:
        return "unknown_domain"
    return "expert_error"


class ExpertUnavailable(RuntimeError):
    """The expert tier is bypassed after a replica death (see :meth:`TierCaller.mark_expert_down`)."""


class TierCaller:
    """Routing and fault handling over T and E handles (see module docstring)."""

    def __init__(self, cfg: Any, traditional: Any, experts: Any):
        self.cfg = cfg
        self.traditional = traditional
        self.experts = experts
        self.metrics = gateway_metrics()
        self._registry: Any = None
        self._domains: tuple[float, list[str]] = (0.0, [])
        self._router: Any = None
        self._router_failed = False
        self._router_lock = threading.Lock()
        self._expert_probe: asyncio.Task | None = None

    def warm_up(self) -> None:
        """Load the domain router in the background when experts exist, so the first auto request is fast."""
        if self.domains():
            threading.Thread(target=self.router, name="pet-router-warmup", daemon=True).start()

    # -- registry and domain choice ------------------------------------------------------------------------

    def registry(self) -> Any:
        """The expert registry (None when the experts package is missing)."""
        if self._registry is None:
            try:
                from pet.expert.registry import ExpertRegistry
            except ImportError:
                return None
            self._registry = ExpertRegistry.from_config(self.cfg)
        return self._registry

    def domains(self, refresh: bool = False) -> list[str]:
        """Registered domains, re-listed at most every second (a new domain needs no redeploy)."""
        when, names = self._domains
        if refresh or time.monotonic() - when > 1.0:
            reg = self.registry()
            names = reg.names() if reg is not None else []
            self._domains = (time.monotonic(), names)
        return names

    def router(self) -> Any:
        """The cloud router: CloudRouter if the router package exists, else a DomainClassifier adapter."""
        with self._router_lock:
            return self._build_router()

    def _build_router(self) -> Any:
        if self._router is None and not self._router_failed:
            try:
                import torch

                from pet.models.embed import Embedder

                torch.set_num_threads(self.cfg.traditional.torch_threads)
                from pet.router.cloud import CloudRouter
                from pet.router.domains import DomainClassifier

                clf = DomainClassifier.from_registry(self.registry(), Embedder(threads=1),
                                                     floor=self.cfg.router.domain_similarity_floor)
                self._router = CloudRouter.from_config(self.cfg, clf)
            except Exception as err:  # no embedder prepared, etc.: auto falls back to T
                log.warning("pet gateway: domain routing unavailable (%s)", type(err).__name__)
                self._router_failed = True
        return self._router

    async def choose_domain(self, req: GenerateRequest) -> tuple[str | None, float | None]:
        """(domain, similarity) for an ``auto``/``e`` request without an explicit domain (None: no expert matches)."""
        if not self.domains():
            return None, None
        router = await asyncio.to_thread(self.router)
        if router is None:
            return None, None
        domain, score = await asyncio.to_thread(router.choose_domain_scored, req.routing_text())
        return (domain if domain in self.domains() else None), score

    # -- tier calls -----------------------------------------------------------------------------------------

    async def call_t(self, payload: dict[str, Any]) -> dict[str, Any]:
        """T's answer. A replica that dies in flight is retried (``replica_retries``; generation is idempotent),
        then 503 with Retry-After; queue full -> 503; deadline -> 504; any other failure -> 502."""
        gw = self.cfg.serve.gateway
        deadline = time.monotonic() + gw.request_timeout_s
        for attempt in range(gw.replica_retries + 1):
            try:
                return await self._call_t_once(payload, deadline)
            except ApiError:
                raise
            except Exception as err:
                if not replica_died(err):
                    log.warning("pet gateway: T failed (%s)", type(err).__name__)
                    raise ApiError(502, "tier_failed", f"the traditional model failed ({type(err).__name__})") \
                        from None
                if attempt < gw.replica_retries:
                    self.metrics.retries.labels(tier="t").inc()
                    log.warning("pet gateway: T replica died in flight; retrying (%d/%d)", attempt + 1,
                                gw.replica_retries)
        raise ApiError(503, "replica_unavailable", "the traditional model's replica is restarting; retry later",
                       {"Retry-After": str(gw.retry_after_s)})

    async def _call_t_once(self, payload: dict[str, Any], deadline: float) -> dict[str, Any]:
        from ray.serve.exceptions import BackPressureError

        t0 = time.perf_counter()
        resp = self.traditional.generate.remote(payload)
        out = None
        try:
            out = await asyncio.wait_for(_await(resp), timeout=max(0.0, deadline - time.monotonic()))
        except BackPressureError:
            raise ApiError(503, "overloaded", "the traditional model's queue is full; retry later",
                           {"Retry-After": str(self.cfg.serve.gateway.retry_after_s)}) from None
        except TimeoutError:
            resp.cancel()
            raise ApiError(504, "timeout", "the traditional model did not answer in time") from None
        finally:
            RequestTimer.add_downstream(t0, out)
        self.metrics.tier_latency.labels(tier="t").observe(time.perf_counter() - t0)
        if "error" in out:
            raise ApiError(422, "invalid_prompt", out["error"])
        return out

    # -- expert availability ---------------------------------------------------------------------------------

    def expert_down(self) -> bool:
        """True while the expert tier is bypassed: a replica died and no probe has reached a live one since."""
        return self._expert_probe is not None and not self._expert_probe.done()

    def mark_expert_down(self) -> None:
        """Bypass E (fall back to T at once) until a probe reaches a live expert replica again."""
        if self.expert_down():
            return
        self.metrics.expert_down.set(1)
        self._expert_probe = asyncio.get_running_loop().create_task(self._probe_expert())

    async def _probe_expert(self) -> None:
        while True:
            await asyncio.sleep(PROBE_PERIOD_S)
            try:
                await asyncio.wait_for(_await(self.experts.stats.remote()), timeout=2.0)
                break
            except Exception:
                continue  # still restarting
        self.metrics.expert_down.set(0)
        log.warning("pet gateway: the expert tier answers again")

    async def call_e(self, domain: str, payload: dict[str, Any]) -> dict[str, Any]:
        """E's answer for ``domain``; raises on failure or after ``expert.timeout_s``."""
        t0 = time.perf_counter()
        resp = self.experts.options(multiplexed_model_id=domain).generate.remote({**payload, "domain": domain})
        out = None
        try:
            out = await asyncio.wait_for(_await(resp), timeout=self.cfg.expert.timeout_s)
        except TimeoutError:
            resp.cancel()
            raise
        finally:
            RequestTimer.add_downstream(t0, out)
        self.metrics.tier_latency.labels(tier="e").observe(time.perf_counter() - t0)
        if "replica" in out:
            self.metrics.loaded_adapters.labels(replica=str(out["replica"])).set(out.get("loaded_adapters", 0))
        if "error" in out:
            raise ApiError(422, "invalid_prompt", out["error"])
        return out

    # -- the request ----------------------------------------------------------------------------------------

    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The /v1/generate logic on a plaintext payload (interface 3); raises ApiError for refusals."""
        t0 = time.perf_counter()
        req = parse_generate(payload)
        gw = self.cfg.serve.gateway
        if req.prompt_chars() > gw.max_prompt_chars:
            raise ApiError(413, "prompt_too_long",
                           f"the prompt has {req.prompt_chars()} characters; the limit is {gw.max_prompt_chars}")
        limit = min(self.cfg.traditional.generation.max_new_tokens_limit,
                    self.cfg.expert.generation.max_new_tokens_limit)
        if req.max_new_tokens is not None and req.max_new_tokens > limit:
            raise ApiError(422, "invalid_request", f"max_new_tokens: must be <= {limit}")
        domain = req.domain
        if domain is not None and domain not in self.domains(refresh=True):
            raise ApiError(404, "unknown_domain",
                           "the requested expert domain is not registered (GET /v1/experts lists them)")
        base = {"prompt": req.prompt_value(), "max_new_tokens": req.max_new_tokens,
                "temperature": req.temperature, "top_p": req.top_p}
        route: dict[str, Any] = {}
        if req.tier is not Tier.t and domain is None:
            domain, similarity = await self.choose_domain(req)
            if similarity is not None:  # why E or not: the best domain's similarity against the floor
                route.update(domain_similarity=round(similarity, 4),
                             domain_floor=self.cfg.router.domain_similarity_floor)
            if domain is None and req.tier is Tier.e:
                raise ApiError(404, "unknown_domain", "tier 'e' needs a domain: none given and none matches")
        escalation: list[str] = []
        fallback_why: str | None = None
        answer: dict[str, Any] | None = None
        tier = "t"
        if req.tier is not Tier.t and domain is not None:
            escalation.append("e")
            try:
                if self.expert_down():
                    raise ExpertUnavailable
                answer = await self.call_e(domain, base)
                tier = "e"
            except ApiError:
                raise
            except Exception as err:
                fallback_why = fallback_reason(err)
                if fallback_why == "replica_died":
                    self.mark_expert_down()
                self.metrics.fallbacks.labels(reason=fallback_why).inc()
                self.metrics.requests.labels(tier="e", outcome="failed").inc()
                log.warning("pet gateway: expert failed (%s); answering from T", fallback_why)
            if answer is not None and req.tier is Tier.auto:
                good, judged = await self._judge_expert(answer)
                route.update(judged)
                if not good:
                    self.metrics.escalations.labels(from_tier="e", to_tier="t", reason="low_confidence").inc()
                    answer = None
        if answer is None:
            escalation.append("t")
            answer = await self.call_t(base)
            tier = "t"
        latency = time.perf_counter() - t0
        self.metrics.observe_answer(tier, latency, answer["usage"])
        return {
            "request_id": req.id(), "text": answer["text"], "tier": tier,
            "domain": domain if "e" in escalation else None,
            "fallback": fallback_why is not None, "fallback_reason": fallback_why, "escalation": escalation,
            "signals": answer["signals"], "usage": answer["usage"], "finish_reason": answer.get("finish_reason"),
            "latency_ms": round(latency * 1000.0, 2), "route": route,
        }

    async def _judge_expert(self, answer: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """(keep E's answer?, the calibrated score and E threshold it was judged with)."""
        router = self._router
        judge = getattr(router, "judge_expert", None)
        if judge is None:
            return True, {}
        try:
            d = await asyncio.to_thread(judge, answer["signals"])
        except Exception:  # malformed signals: escalating is the safe choice
            return False, {}
        from pet.router.policy import Action

        return d.action is Action.ANSWER_E, {"e_score": d.score, "e_threshold": d.threshold}


async def _await(resp: Any) -> Any:
    return await resp
