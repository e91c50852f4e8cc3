"""What the gateway does with one request: ask the router, call the tiers, fall back when a tier fails, count.

:class:`Dispatcher` is the Ray-free half of the Gateway deployment: it holds the DeploymentHandles of T and E,
the expert registry and the :class:`pet.router.router.Router` (over the registry's ``DomainClassifier``). Tier
``"t"`` goes to T; ``"e"`` to the named (or the router's) domain's adapter; ``"auto"`` lets the router choose the
domain and judge the expert's answer (E -> T). The quality decisions are the router's; what is decided here is
reliability: an expert that fails or times out is answered from T with ``fallback: true`` and a reason, a T
replica that dies in flight is retried, and after an expert replica death E is bypassed until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from pet.expert.registry import ExpertRegistry
from pet.questioner.profile import ProfileError, parse_profile
from pet.router.policy import Action
from pet.router.router import DomainChoice, Router
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
    if "BaseMismatchError" in names or "BaseMismatchError" in text:
        return "base_mismatch"
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
    """The expert tier is bypassed after a replica death (see :meth:`Dispatcher.mark_expert_down`)."""


class Dispatcher:
    """Tier calls and fault handling over T and E handles, with the router's decisions (see module docstring)."""

    def __init__(self, cfg: Any, traditional: Any, experts: Any):
        self.cfg = cfg
        self.traditional = traditional
        self.experts = experts
        self.metrics = gateway_metrics()
        self._registry: Any = None
        self._domains: tuple[float, list[str]] = (0.0, [])
        self.router = Router.from_config(cfg)  # its domain classifier is attached on first use
        self._classifier_failed = False
        self._classifier_lock = threading.Lock()
        self._expert_probe: asyncio.Task | None = None

    def warm_up(self) -> None:
        """Load the domain router in the background when experts exist, so the first auto request is fast."""
        if self.domains():
            threading.Thread(target=self.load_classifier, name="pet-router-warmup", daemon=True).start()

    # -- registry and domain choice ------------------------------------------------------------------------

    def registry(self) -> ExpertRegistry:
        """The expert registry of the config."""
        if self._registry is None:
            self._registry = ExpertRegistry.from_config(self.cfg)
        return self._registry

    def domains(self, refresh: bool = False) -> list[str]:
        """Registered domains, re-listed at most every second (a new domain needs no redeploy)."""
        when, names = self._domains
        if refresh or time.monotonic() - when > 1.0:
            names = self.registry().names()
            self._domains = (time.monotonic(), names)
        return names

    def load_classifier(self) -> bool:
        """Give the router its domain classifier on first use (it loads an embedder); False when that fails
        (no embedder prepared, ...): auto requests then go to T."""
        with self._classifier_lock:
            if self.router.classifier is None and not self._classifier_failed:
                try:
                    self.router.classifier = self._build_classifier()
                except Exception as err:
                    log.warning("pet gateway: domain routing unavailable (%s)", type(err).__name__)
                    self._classifier_failed = True
            return self.router.classifier is not None

    def _build_classifier(self) -> Any:
        import torch

        from pet.models.embed import embedder_from_config
        from pet.router.domains import DomainClassifier

        torch.set_num_threads(self.cfg.traditional.torch_threads)
        return DomainClassifier.from_registry(self.registry(), embedder_from_config(self.cfg),
                                              floor=self.cfg.router.domain_similarity_floor)

    async def choose_domain(self, req: GenerateRequest) -> DomainChoice:
        """The router's domain for an ``auto``/``e`` request without an explicit domain (None: no expert matches)."""
        if not self.domains():
            return DomainChoice(None, reason="no expert is registered")
        if not await asyncio.to_thread(self.load_classifier):
            return DomainChoice(None, reason="domain routing unavailable")
        return await asyncio.to_thread(self.router.choose_domain, req.routing_text(), self.domains())

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

    def _parse(self, payload: dict[str, Any]) -> GenerateRequest:
        """The validated request, within the gateway's prompt and token limits and naming a registered domain."""
        req = parse_generate(payload)
        gw = self.cfg.serve.gateway
        if req.prompt_chars() > gw.max_prompt_chars:
            raise ApiError(413, "prompt_too_long",
                           f"the prompt has {req.prompt_chars()} characters; the limit is {gw.max_prompt_chars}")
        limit = min(self.cfg.traditional.generation.max_new_tokens_limit,
                    self.cfg.expert.generation.max_new_tokens_limit)
        if req.max_new_tokens is not None and req.max_new_tokens > limit:
            raise ApiError(422, "invalid_request", f"max_new_tokens: must be <= {limit}")
        if req.questioner is not None:
            try:
                parse_profile(req.questioner, self.cfg.questioner)
            except ProfileError as err:  # names the field and limit, never the profile's content
                raise ApiError(422, "invalid_profile", str(err)) from None
        if req.domain is not None and req.domain not in self.domains(refresh=True):
            raise ApiError(404, "unknown_domain",
                           "the requested expert domain is not registered (GET /v1/experts lists them)")
        return req

    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The ``POST /v1/generate`` logic on a plaintext payload; raises ApiError for refusals."""
        t0 = time.perf_counter()
        req = self._parse(payload)
        base = {"prompt": req.prompt_value(), "max_new_tokens": req.max_new_tokens,
                "temperature": req.temperature, "top_p": req.top_p}
        if req.questioner is not None and self.cfg.questioner.mode != "off":
            base["questioner"] = req.questioner  # the tier conditions on it and drops it (pet.questioner.condition)
        route: dict[str, Any] = {}
        domain = req.domain
        if req.tier is not Tier.t and domain is None:
            choice = await self.choose_domain(req)
            domain = choice.domain
            if choice.similarity is not None:  # why E or not: the best domain's similarity against the floor
                route.update(domain_similarity=round(choice.similarity, 4), domain_floor=choice.floor)
            if domain is None and req.tier is Tier.e:
                raise ApiError(404, "unknown_domain", "tier 'e' needs a domain: none given and none matches")
        escalation: list[str] = []
        fallback_why: str | None = None
        answer: dict[str, Any] | None = None
        if req.tier is not Tier.t and domain is not None:
            escalation.append("e")
            answer, fallback_why = await self._expert_answer(domain, base)
            if answer is not None and req.tier is Tier.auto:
                answer = await self._judged(answer, route)
        tier = "e" if answer is not None else "t"
        if answer is None:
            escalation.append("t")
            answer = await self.call_t(base)
        latency = time.perf_counter() - t0
        self.metrics.observe_answer(tier, latency, answer["usage"])
        return {
            "request_id": req.id(), "text": answer["text"], "tier": tier,
            "domain": domain if "e" in escalation else None,
            "fallback": fallback_why is not None, "fallback_reason": fallback_why, "escalation": escalation,
            "signals": answer["signals"], "usage": answer["usage"], "finish_reason": answer.get("finish_reason"),
            "latency_ms": round(latency * 1000.0, 2), "route": route, "model": answer.get("model"),
        }

    async def _expert_answer(self, domain: str, base: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """(E's answer, None), or (None, the fallback reason) when the expert failed or is bypassed."""
        try:
            if self.expert_down():
                raise ExpertUnavailable
            return await self.call_e(domain, base), None
        except ApiError:
            raise
        except Exception as err:
            why = fallback_reason(err)
            if why == "replica_died":
                self.mark_expert_down()
            self.metrics.fallbacks.labels(reason=why).inc()
            self.metrics.requests.labels(tier="e", outcome="failed").inc()
            log.warning("pet gateway: expert failed (%s); answering from T", why)
            return None, why

    async def _judged(self, answer: dict[str, Any], route: dict[str, Any]) -> dict[str, Any] | None:
        """E's answer if the router keeps it, else None (escalate to T); the score and threshold go into ``route``."""
        d = await asyncio.to_thread(self.router.judge_expert, answer.get("signals"))
        if d.score is not None:
            route.update(e_score=d.score, e_threshold=d.threshold)
        if d.action is Action.ANSWER_E:
            return answer
        self.metrics.escalations.labels(from_tier="e", to_tier="t", reason="low_confidence").inc()
        return None


async def _await(resp: Any) -> Any:
    return await resp
