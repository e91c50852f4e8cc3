"""Usage metering and contribution rewards: :class:`Ledger` (strict) and :class:`Meter` (never raises).

``Ledger`` validates its input, prices usage by tier (P answers cost the cloud nothing by default), credits
rewards per used sample, updates the Prometheus counters, and stores events through a
:class:`~pet.ledger.store.LedgerStore`. ``Meter`` wraps a ledger for the request path: a broken, locked or
missing database is counted in ``pet_ledger_failures_total`` and logged, and the user's request goes on.

    led = Ledger.from_config(cfg)
    led.record_usage("req-1", "alice", "t", prompt_tokens=12, completion_tokens=30)   # True
    led.record_usage("req-1", "alice", "t", 12, 30)                                   # False: a retry
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pet.ledger import metrics
from pet.ledger.store import (
    TIERS,
    Counts,
    LedgerError,
    LedgerStore,
    RewardEvent,
    SharedEvent,
    SummaryRow,
    UsageEvent,
)

log = logging.getLogger("pet.ledger")

MAX_ID_CHARS = 200


def default_ledger_path(models_dir: str | None = None) -> Path:
    """``<state dir>/ledger.sqlite``: beside the models folder, with the keys (see :func:`pet.paths.state_dir`)."""
    from pet.paths import state_dir

    return state_dir(models_dir) / "ledger.sqlite"


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_CHARS:
        raise ValueError(f"{name} must be at most {MAX_ID_CHARS} characters, got {len(value)}")
    return value


def _count(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _tier(value: Any) -> str:
    tier = value.lower() if isinstance(value, str) else value
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {value!r}")
    return tier


def purpose_tier(purpose: str) -> str:
    """The tier a contribution serves: domain text that trains an expert -> "e"; personal samples -> "p"."""
    return "e" if "expert" in purpose.lower() else "p"


class Ledger:
    """Meters answered requests per user and tier and credits contributions; idempotent by event id."""

    def __init__(
        self,
        path: str | Path | None = None,
        prices: Mapping[str, float] | Any = None,
        reward_per_sample: float = 0.01,
        *,
        store: LedgerStore | None = None,
        busy_timeout_s: float = 5.0,
        synchronous: str = "full",
        clock: Callable[[], float] = time.time,
    ):
        if prices is None:
            prices = {"p": 0.0, "e": 0.5, "t": 1.0}
        elif not isinstance(prices, Mapping):  # a TierPrices config section
            prices = prices.model_dump()
        missing = [t for t in TIERS if t not in prices]
        if missing:
            raise ValueError(f"prices lack tier(s) {', '.join(missing)}")
        self.prices = {t: float(prices[t]) for t in TIERS}
        for tier, price in self.prices.items():
            if not math.isfinite(price) or price < 0:
                raise ValueError(f"price of tier {tier} must be a finite number >= 0, got {price!r}")
        if not math.isfinite(reward_per_sample) or reward_per_sample < 0:
            raise ValueError(f"reward_per_sample must be a finite number >= 0, got {reward_per_sample!r}")
        self.reward_per_sample = float(reward_per_sample)
        self.clock = clock
        if store is None:
            if path is None:
                raise ValueError("give a ledger path or a store")
            from pet.ledger.sqlite import SqliteLedgerStore

            store = SqliteLedgerStore(path, busy_timeout_s=busy_timeout_s, synchronous=synchronous)
        self.store = store

    @classmethod
    def from_config(cls, cfg: Any) -> Ledger:
        """Build from a :class:`~pet.config.schema.PetConfig` (``cfg.ledger``); raises LedgerError if unusable."""
        lc = cfg.ledger
        path = Path(lc.path).expanduser() if lc.path else default_ledger_path(cfg.models_dir)
        return cls(path, lc.prices, lc.reward_per_sample, busy_timeout_s=lc.busy_timeout_s,
                   synchronous=lc.synchronous)

    # -- writing -----------------------------------------------------------------------------------------------

    def cost(self, tier: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Price of a request: all its tokens at the tier's price per 1,000 tokens."""
        return self.prices[_tier(tier)] * (prompt_tokens + completion_tokens) / 1000.0

    def record_usage(self, request_id: str, user: str, tier: str, prompt_tokens: int, completion_tokens: int) -> bool:
        """Meter one answered request; False (and nothing billed) if ``request_id`` was already recorded."""
        event = UsageEvent(
            request_id=_text("request_id", request_id), user=_text("user", user), tier=_tier(tier),
            prompt_tokens=_count("prompt_tokens", prompt_tokens),
            completion_tokens=_count("completion_tokens", completion_tokens),
            cost=self.cost(tier, prompt_tokens, completion_tokens), ts=self.clock(),
        )
        if not self.store.add_usage(event):
            metrics.DUPLICATES.labels("usage").inc()
            return False
        metrics.REQUESTS.labels(event.tier).inc()
        metrics.TOKENS.labels(event.tier, "prompt").inc(event.prompt_tokens)
        metrics.TOKENS.labels(event.tier, "completion").inc(event.completion_tokens)
        metrics.COST.labels(event.tier).inc(event.cost)
        return True

    def record_shared(self, request_id: str, user: str, tier: str, kind: str, nbytes: int) -> bool:
        """Count ``nbytes`` of personal data (``kind``, e.g. "questioner_profile") a request carried to the cloud."""
        event = SharedEvent(request_id=_text("request_id", request_id), user=_text("user", user), tier=_tier(tier),
                            kind=_text("kind", kind), nbytes=_count("nbytes", nbytes), ts=self.clock())
        return self.store.add_shared(event)

    def credit_contribution(
        self, event_id: str, contributor: str, samples: int, purpose: str, tier: str | None = None
    ) -> bool:
        """Credit ``samples`` used samples to ``contributor``; False if ``event_id`` was already credited.

        ``purpose`` says what the samples were used for (e.g. "expert_training:medical", "synthetic_data");
        the tier for the reward counter is ``tier`` or derived from it by :func:`purpose_tier`.
        """
        purpose = _text("purpose", purpose)
        samples = _count("samples", samples, minimum=1)
        event = RewardEvent(
            event_id=_text("event_id", event_id), contributor=_text("contributor", contributor),
            tier=_tier(tier) if tier is not None else purpose_tier(purpose), samples=samples, purpose=purpose,
            amount=samples * self.reward_per_sample, ts=self.clock(),
        )
        if not self.store.add_reward(event):
            metrics.DUPLICATES.labels("reward").inc()
            return False
        metrics.REWARDS.labels(event.tier).inc(event.amount)
        return True

    def credit_job(self, job_id: str, used: Mapping[str, int], purpose: str, tier: str | None = None) -> int:
        """Credit every contributor of one training or synthesis job; returns how many were newly credited.

        ``used`` maps contributor -> samples of theirs that the job used. Event ids are ``<job_id>:<contributor>``,
        so re-running or retrying the same job never credits anyone twice.
        """
        _text("job_id", job_id)
        return sum(bool(self.credit_contribution(f"{job_id}:{who}", who, n, purpose, tier))
                   for who, n in sorted(used.items()) if n > 0)

    # -- reading -----------------------------------------------------------------------------------------------

    def summary(self, user: str | None = None, since: float | None = None) -> list[SummaryRow]:
        """Totals per (user, tier); see :meth:`LedgerStore.summary`."""
        return self.store.summary(user=user, since=since)

    def events(self, user: str | None = None, since: float | None = None) -> Iterator[dict]:
        """Every event, oldest first; see :meth:`LedgerStore.events`."""
        return self.store.events(user=user, since=since)

    def counts(self) -> Counts:
        """Stored events of each kind."""
        return self.store.counts()

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()


class Meter:
    """The ledger as the request path uses it: never raises, returns None when metering failed or is off.

    The ledger is opened lazily and reopened after a failure, so a database that was locked or replaced
    recovers without restarting the gateway. Failures increment ``pet_ledger_failures_total{operation}``.
    """

    LOG_EVERY_S = 60.0

    def __init__(self, ledger: Ledger | Callable[[], Ledger] | None):
        self._opener = ledger if callable(ledger) and not isinstance(ledger, Ledger) else None
        self._ledger = ledger if isinstance(ledger, Ledger) else None
        self.enabled = ledger is not None
        self.failures = 0
        self._lock = threading.Lock()
        self._last_log = -math.inf

    @classmethod
    def from_config(cls, cfg: Any) -> Meter:
        """A meter over ``Ledger.from_config(cfg)`` (opened on first use); off if ``cfg.ledger.enabled`` is false."""
        if not cfg.ledger.enabled:
            return cls(None)
        return cls(lambda: Ledger.from_config(cfg))

    @property
    def ledger(self) -> Ledger | None:
        """The open ledger, opening it if needed (raises LedgerError if it cannot be opened)."""
        if self._ledger is None and self._opener is not None:
            with self._lock:
                if self._ledger is None:
                    self._ledger = self._opener()
        return self._ledger

    def _fail(self, operation: str, err: BaseException) -> None:
        self.failures += 1
        metrics.FAILURES.labels(operation).inc()
        now = time.monotonic()
        if now - self._last_log >= self.LOG_EVERY_S:
            self._last_log = now
            # the message names the file and the problem; it never contains prompt text
            log.warning("metering failed (%s), request answered anyway: %s: %s", operation, type(err).__name__, err)

    def _call(self, operation: str, *args: Any, **kwargs: Any) -> bool | None:
        if not self.enabled:
            return None
        try:
            return getattr(self.ledger, operation)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - metering must never fail a user request
            if isinstance(err, LedgerError) and self._opener is not None:
                self._ledger = None  # reopen next time: the file may have been repaired or replaced
            self._fail(operation, err)
            return None

    def record_usage(self, request_id: str, user: str, tier: str, prompt_tokens: int,
                     completion_tokens: int) -> bool | None:
        """:meth:`Ledger.record_usage`, or None if metering is off or failed."""
        return self._call("record_usage", request_id, user, tier, prompt_tokens, completion_tokens)

    def credit_contribution(self, event_id: str, contributor: str, samples: int, purpose: str,
                            tier: str | None = None) -> bool | None:
        """:meth:`Ledger.credit_contribution`, or None if metering is off or failed."""
        return self._call("credit_contribution", event_id, contributor, samples, purpose, tier=tier)

    async def arecord_result(self, result: Mapping[str, Any], user: str | None,
                             shared: Mapping[str, int] | None = None) -> bool | None:
        """Meter a ``/v1/generate`` response dict (request_id, tier, usage) for ``user`` (None: "anonymous");
        ``shared`` maps a kind of personal data the request carried to its size in bytes (counted, never kept)."""
        if shared and "request_id" in result:
            await self.arecord_shared(result["request_id"], user or "anonymous", result.get("tier", "t"), shared)
        try:
            usage = result["usage"]
            args = (result["request_id"], user or "anonymous", result["tier"], int(usage["prompt_tokens"]),
                    int(usage["completion_tokens"]))
        except (KeyError, TypeError, ValueError) as err:
            if self.enabled:
                self._fail("record_usage", err)
            return None
        return await self.arecord_usage(*args)

    async def arecord_shared(self, request_id: str, user: str, tier: str, shared: Mapping[str, int]) -> None:
        """:meth:`Ledger.record_shared` for each kind in ``shared`` (kind -> bytes), in a worker thread."""
        for kind, nbytes in shared.items():
            if nbytes:
                await asyncio.to_thread(self._call, "record_shared", request_id, user, tier, kind, nbytes)

    async def arecord_usage(self, *args: Any, **kwargs: Any) -> bool | None:
        """:meth:`record_usage` in a worker thread, so a waiting SQLite lock never blocks the event loop."""
        return await asyncio.to_thread(self.record_usage, *args, **kwargs)

    async def acredit_contribution(self, *args: Any, **kwargs: Any) -> bool | None:
        """:meth:`credit_contribution` in a worker thread."""
        return await asyncio.to_thread(self.credit_contribution, *args, **kwargs)
