"""Prometheus metrics of the gateway process, served at ``GET /metrics``.

Labels are fixed vocabularies (tier, outcome, reason, direction, replica id); prompt text never appears in
a label. One set of collectors per process, created on first use in a private registry so that a
re-imported module (tests, Serve restarts in one worker) never double-registers.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
OWN_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class RequestTimer:
    """Splits one request's time in the gateway into its own work and the time spent awaiting deployments.

    The route creates one (``with RequestTimer() as t``); every tier call, in any coroutine of the same request,
    reports its interval with :meth:`add_downstream`, and the route sets ``body_s`` to the time it waited for
    the request body (behind Serve's HTTP proxy the body is fetched from the proxy actor: a round trip). The
    rest is the gateway's own work (crypto, validation, routing, serialisation). All three go into the
    ``Server-Timing`` response header; the own time also into ``pet_gateway_own_seconds``.
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.spent: list[tuple[float, float]] = []
        self.body_s = 0.0
        self.tier_ms: list[float] = []  # what the tier replicas report as their own time (``replica_ms``)
        self._token: Any = None

    def __enter__(self) -> RequestTimer:
        self._token = _CURRENT_TIMER.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _CURRENT_TIMER.reset(self._token)

    @staticmethod
    def add_downstream(start: float, answer: Any = None) -> None:
        """Record a deployment call from ``start`` (perf_counter) until now for the current request, with the
        ``replica_ms`` its answer reports (no-op outside a route)."""
        timer = _CURRENT_TIMER.get()
        if timer is not None:
            timer.spent.append((start, time.perf_counter()))
            if isinstance(answer, dict) and isinstance(answer.get("replica_ms"), int | float):
                timer.tier_ms.append(float(answer["replica_ms"]))

    def split(self) -> tuple[float, float]:
        """(own seconds, downstream seconds) so far; concurrent calls count once (union of intervals)."""
        down, reach = 0.0, float("-inf")
        for a, b in sorted(self.spent):
            if b > reach:
                down += b - max(a, reach)
                reach = b
        return max(0.0, time.perf_counter() - self.t0 - down - self.body_s), down

    def server_timing(self) -> str:
        """The ``Server-Timing`` header value (milliseconds), after observing the own time."""
        own, down = self.split()
        gateway_metrics().own.observe(own)
        parts = f"body;dur={self.body_s * 1e3:.3f}, gateway;dur={own * 1e3:.3f}, upstream;dur={down * 1e3:.3f}"
        if self.tier_ms:  # the replicas' own time inside upstream: upstream - tier = the handle hops
            parts += f", tier;dur={sum(self.tier_ms):.3f}"
        return parts


# The RequestTimer of the request being handled (set by the route; tier calls report into it).
_CURRENT_TIMER: ContextVar[RequestTimer | None] = ContextVar("pet_downstream", default=None)


class GatewayMetrics:
    """The collectors the gateway updates."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pet_requests", "Requests by answering tier and outcome", ["tier", "outcome"],
                                registry=r)
        self.escalations = Counter("pet_escalations", "Escalations between tiers by reason",
                                   ["from_tier", "to_tier", "reason"], registry=r)
        self.fallbacks = Counter("pet_fallbacks", "Expert failures answered by T, by reason", ["reason"],
                                 registry=r)
        self.latency = Histogram("pet_request_latency_seconds", "End-to-end latency by answering tier", ["tier"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.tier_latency = Histogram("pet_tier_call_seconds", "Latency of one call into a tier deployment",
                                      ["tier"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("pet_tokens", "Tokens by tier and direction (in = prompt, out = completion)",
                              ["tier", "direction"], registry=r)
        self.loaded_adapters = Gauge("pet_loaded_adapters", "LoRA adapters loaded, by expert replica",
                                     ["replica"], registry=r)
        self.own = Histogram("pet_gateway_own_seconds", "Time the gateway adds to a /v1/generate request, "
                             "excluding the tier calls it awaits and the wait for the request body",
                             buckets=OWN_BUCKETS, registry=r)
        self.retries = Counter("pet_replica_retries", "Tier calls retried after their replica died in flight",
                               ["tier"], registry=r)
        self.expert_down = Gauge("pet_expert_unavailable", "1 while the expert tier is bypassed after a replica "
                                 "death (requests fall back to T at once)", registry=r)
        self.errors = Counter("pet_client_errors", "Refused requests by HTTP status and code",
                              ["status", "code"], registry=r)
        from pet.security.metrics import OPENED, REJECTIONS

        for collector in (REJECTIONS, OPENED):  # the envelope layer's counters, on the same GET /metrics
            r.register(collector)

    def observe_answer(self, tier: str, latency_s: float, usage: dict[str, Any]) -> None:
        """Count one answered request."""
        self.requests.labels(tier=tier, outcome="ok").inc()
        self.latency.labels(tier=tier).observe(latency_s)
        self.tokens.labels(tier=tier, direction="in").inc(int(usage.get("prompt_tokens", 0)))
        self.tokens.labels(tier=tier, direction="out").inc(int(usage.get("completion_tokens", 0)))

    def observe_error(self, status: int, code: str, tier: str = "none") -> None:
        """Count one refused or failed request."""
        self.errors.labels(status=str(status), code=code).inc()
        self.requests.labels(tier=tier, outcome="client_error" if status < 500 else "server_error").inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@lru_cache(maxsize=1)
def gateway_metrics() -> GatewayMetrics:
    """The process-wide collectors."""
    return GatewayMetrics()
