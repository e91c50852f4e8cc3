"""Storage interface of the ledger: the events it keeps and the abstract :class:`LedgerStore`.

Every schema and query detail lives behind :class:`LedgerStore`, so that the embedded SQLite store
(:mod:`pet.ledger.sqlite`) can be replaced by a server database without touching the callers. A store
knows nothing of prices or metrics; :class:`pet.ledger.ledger.Ledger` computes those.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass

TIERS = ("p", "e", "t")


class LedgerError(RuntimeError):
    """The ledger database cannot be used: corrupted, locked for too long, unreadable, or of a newer schema."""


@dataclass(frozen=True)
class UsageEvent:
    """One answered request: tokens and their cost, keyed by the request id (the idempotency key)."""

    request_id: str
    user: str
    tier: str
    prompt_tokens: int
    completion_tokens: int
    cost: float
    ts: float


@dataclass(frozen=True)
class RewardEvent:
    """One contribution that was used (training an expert, generating synthetic data), keyed by event id."""

    event_id: str
    contributor: str
    tier: str
    samples: int
    purpose: str
    amount: float
    ts: float


@dataclass(frozen=True)
class SharedEvent:
    """Data a device shared with one request (a questioner profile): its kind and size, never its content."""

    request_id: str
    user: str
    tier: str
    kind: str
    nbytes: int
    ts: float


@dataclass
class SummaryRow:
    """Totals of one user on one tier; ``balance`` = rewards - cost."""

    user: str
    tier: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    samples: int = 0
    rewards: float = 0.0
    shared_bytes: int = 0  # personal data the user's devices sent with requests (questioner profiles)

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def balance(self) -> float:
        """Rewards earned minus cost incurred."""
        return self.rewards - self.cost


@dataclass
class Counts:
    """Number of stored events of each kind."""

    usage: int = 0
    rewards: int = 0


class LedgerStore(abc.ABC):
    """Durable, idempotent storage of usage and reward events.

    Implementations must write each event in its own transaction, make a second insert with the same id a
    no-op that returns False, be safe for several processes at once, and raise :class:`LedgerError` (never a
    driver exception) when the database cannot be used.
    """

    @abc.abstractmethod
    def add_usage(self, event: UsageEvent) -> bool:
        """Store a usage event; False if its request id is already stored (nothing changes then)."""

    @abc.abstractmethod
    def add_reward(self, event: RewardEvent) -> bool:
        """Store a reward event; False if its event id is already stored."""

    def add_shared(self, event: SharedEvent) -> bool:
        """Store what a request shared (kind and bytes); False if already stored. Stores without it keep nothing."""
        return False

    @abc.abstractmethod
    def summary(self, user: str | None = None, since: float | None = None) -> list[SummaryRow]:
        """Totals per (user, tier), sorted by user then tier; optionally one user and events at or after ``since``."""

    @abc.abstractmethod
    def events(self, user: str | None = None, since: float | None = None) -> Iterator[dict]:
        """Every event as a flat dict (``kind`` = "usage" or "reward"), oldest first."""

    @abc.abstractmethod
    def counts(self) -> Counts:
        """How many events of each kind are stored."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections (optional)."""
