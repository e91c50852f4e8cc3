"""Replay refusal for encrypted envelopes: a bounded, in-memory store of the request ids seen recently.

A request is refused when its timestamp lies outside ``now +- window`` or its request id was already accepted.
Memory is bounded: when the store is full the entry with the oldest timestamp is evicted and that timestamp
becomes a *floor*: from then on every request stamped at or before the floor is refused too. A replay of an
evicted id therefore still fails (its timestamp is at or below the floor), so eviction never reopens a hole; the
price is that, under a flood bigger than the store, honest requests delayed by more than the flood's age are
refused and must be resent with a fresh id.

:class:`ReplayGuard` lives in one process: with several gateway replicas a replayed envelope routed to another
replica inside the window would pass it. :class:`SqliteReplayGuard` (``crypto.replay_store: sqlite``) shares the
seen ids between every process on one host through a SQLite file (WAL; the request id is the primary key, so the
check-and-insert is atomic across processes). Replicas on different hosts would need a network store (not built).
"""

from __future__ import annotations

import heapq
import sqlite3
import threading
import time
from pathlib import Path

from pet.io import private_file


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


class SqliteReplayGuard:
    """Accepted request ids in a SQLite file shared by every gateway replica on one host.

    Same interface as :class:`ReplayGuard`. Rows older than the window are deleted at most once a second (their
    timestamp alone refuses them), so the table holds about (request rate x window) rows.
    """

    def __init__(self, path: str | Path, window_s: float, busy_timeout_s: float = 5.0):
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.path = Path(path)
        private_file(self.path)
        self.window_ms = int(window_s * 1000)
        self._lock = threading.Lock()
        self._last_purge = 0.0
        # one connection per guard, used under a lock: replicas are separate processes, each with its own guard
        self._db = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a lost last write after an OS crash only reopens ids
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (rid TEXT PRIMARY KEY, ts INTEGER NOT NULL) WITHOUT ROWID")

    def __repr__(self) -> str:
        return f"SqliteReplayGuard({str(self.path)!r})"

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM seen").fetchone()[0])

    def check(self, rid: str, ts_ms: int, now_ms: int) -> str | None:
        """The refusal reason (``timestamp``, ``replay``) for this request, or None if it may proceed."""
        if abs(ts_ms - now_ms) > self.window_ms:
            return "timestamp"
        with self._lock:
            row = self._db.execute("SELECT 1 FROM seen WHERE rid = ?", (rid,)).fetchone()
        return "replay" if row else None

    def accept(self, rid: str, ts_ms: int, now_ms: int) -> str | None:
        """Atomically (across processes) check and remember ``rid``; a refusal reason, or None when recorded."""
        if abs(ts_ms - now_ms) > self.window_ms:
            return "timestamp"
        with self._lock:
            if time.monotonic() - self._last_purge > 1.0:
                self._last_purge = time.monotonic()
                self._db.execute("DELETE FROM seen WHERE ts < ?", (now_ms - self.window_ms,))
            try:
                self._db.execute("INSERT INTO seen (rid, ts) VALUES (?, ?)", (rid, ts_ms))
            except sqlite3.IntegrityError:
                return "replay"
        return None

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
