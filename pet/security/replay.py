"""Replay refusal for encrypted envelopes: a bounded, in-memory store of the request ids seen recently.

A request is refused when its timestamp lies outside ``now +- window`` or its request id was already accepted.
Memory is bounded: when the store is full the entry with the oldest timestamp is evicted and that timestamp
becomes a *floor*: from then on every request stamped at or before the floor is refused too. A replay of an
evicted id therefore still fails (its timestamp is at or below the floor), so eviction never reopens a hole; the
price is that, under a flood bigger than the store, honest requests delayed by more than the flood's age are
refused and must be resent with a fresh id.

Limitation: the store lives in one process. With several gateway replicas a replayed envelope routed to another
replica inside the window would pass this check (the ledger's duplicate-request-id refusal still stops it from
being billed twice). A shared store (Redis, or a Ray actor) would close that; see docs/security.md.
"""

from __future__ import annotations

import heapq
import threading


class ReplayGuard:
    """Remembers accepted (request id, timestamp) pairs for ``window_s`` seconds, at most ``capacity`` of them."""

    def __init__(self, window_s: float, capacity: int = 100_000):
        if window_s <= 0 or capacity < 1:
            raise ValueError("window_s must be > 0 and capacity >= 1")
        self.window_ms = int(window_s * 1000)
        self.capacity = capacity
        self._seen: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._floor_ms = -1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, rid: str, ts_ms: int, now_ms: int) -> str | None:
        """The refusal reason (``timestamp``, ``replay``) for this request, or None if it may proceed."""
        if abs(ts_ms - now_ms) > self.window_ms:
            return "timestamp"
        with self._lock:
            if rid in self._seen or ts_ms <= self._floor_ms:
                return "replay"
        return None

    def accept(self, rid: str, ts_ms: int, now_ms: int) -> str | None:
        """Atomically check and remember ``rid``; returns a refusal reason, or None when it was recorded."""
        if abs(ts_ms - now_ms) > self.window_ms:
            return "timestamp"
        with self._lock:
            self._expire(now_ms)
            if rid in self._seen or ts_ms <= self._floor_ms:
                return "replay"
            while len(self._seen) >= self.capacity:
                old_ts, old_rid = heapq.heappop(self._heap)
                if self._seen.get(old_rid) == old_ts:
                    del self._seen[old_rid]
                    self._floor_ms = max(self._floor_ms, old_ts)
            self._seen[rid] = ts_ms
            heapq.heappush(self._heap, (ts_ms, rid))
        return None

    def _expire(self, now_ms: int) -> None:
        # An id stamped before now - window can never be accepted again (timestamp check), so forget it.
        horizon = now_ms - self.window_ms
        while self._heap and self._heap[0][0] < horizon:
            ts, rid = heapq.heappop(self._heap)
            if self._seen.get(rid) == ts:
                del self._seen[rid]
