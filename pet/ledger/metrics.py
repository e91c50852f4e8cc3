"""Prometheus counters of the ledger, registered once per process in the default registry.

Labels are bounded: the tier (p, e, t) and an operation name. User ids never become labels: they are
unbounded and personal; per-user totals live in the ledger itself (``pet ledger show``).
"""

from __future__ import annotations

from prometheus_client import Counter

REQUESTS = Counter("pet_ledger_requests", "Requests metered by the ledger", ["tier"])
TOKENS = Counter("pet_ledger_tokens", "Tokens metered by the ledger", ["tier", "kind"])
COST = Counter("pet_ledger_cost", "Cost charged to users (price units)", ["tier"])
REWARDS = Counter("pet_ledger_rewards", "Rewards credited to contributors (price units)", ["tier"])
DUPLICATES = Counter("pet_ledger_duplicates", "Events ignored because their id was already recorded", ["kind"])
FAILURES = Counter(
    "pet_ledger_failures", "Metering operations that failed; the user request was answered anyway", ["operation"]
)

_NAMES = ("pet_ledger_requests", "pet_ledger_tokens", "pet_ledger_cost", "pet_ledger_rewards",
          "pet_ledger_duplicates", "pet_ledger_failures")


def exposition() -> bytes:
    """Prometheus text of the ledger counters alone, for a ``/metrics`` route that renders its own registry
    (append it: ``generate_latest(own_registry) + exposition()``)."""
    from prometheus_client import REGISTRY, generate_latest

    names = [f"{n}_total" for n in _NAMES] + [f"{n}_created" for n in _NAMES]
    return generate_latest(REGISTRY.restricted_registry(names))
