"""The default ledger store: one embedded SQLite file in WAL mode.

Why these choices:

* WAL lets readers (``pet ledger show``) run while replicas write, and several processes append safely.
* ``busy_timeout`` makes a writer wait for another writer's short transaction instead of failing at once;
  only a lock held longer than the timeout becomes a :class:`LedgerError`.
* Each event is one ``INSERT OR IGNORE`` in its own ``BEGIN IMMEDIATE`` transaction, and the primary key is
  the request / event id: a retried request is stored once, and a crash loses at most the event in flight.
* One connection per thread and process (sqlite3 connections must not cross threads or forks).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from pet.io import private_file
from pet.ledger.store import Counts, LedgerError, LedgerStore, RewardEvent, SharedEvent, SummaryRow, UsageEvent

SCHEMA_VERSION = 1

# Connections a forked child inherited (see SqliteLedgerStore._conn). Open the ledger after forking: a
# process that forks writers while it holds a connection to the same file breaks SQLite's POSIX locking.
_INHERITED: list[sqlite3.Connection] = []

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
    request_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    user TEXT NOT NULL,
    tier TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL CHECK (completion_tokens >= 0),
    cost REAL NOT NULL CHECK (cost >= 0)
);
CREATE INDEX IF NOT EXISTS usage_user_ts ON usage (user, ts);
CREATE TABLE IF NOT EXISTS rewards (
    event_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    contributor TEXT NOT NULL,
    tier TEXT NOT NULL,
    samples INTEGER NOT NULL CHECK (samples >= 0),
    purpose TEXT NOT NULL,
    amount REAL NOT NULL CHECK (amount >= 0)
);
CREATE INDEX IF NOT EXISTS rewards_contributor_ts ON rewards (contributor, ts);
CREATE TABLE IF NOT EXISTS shared (
    request_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts REAL NOT NULL,
    user TEXT NOT NULL,
    tier TEXT NOT NULL,
    bytes INTEGER NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (request_id, kind)
);
"""


def _explain(path: Path, err: sqlite3.Error, timeout_s: float) -> LedgerError:
    """Turn a driver error into a message that says what is wrong with which file."""
    msg = str(err).lower()
    if "locked" in msg or "busy" in msg:
        return LedgerError(
            f"ledger database {path} is locked: another process held it for more than {timeout_s:g} s ({err})"
        )
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return LedgerError(f"ledger database {path} is corrupted or not a SQLite file ({err}); "
                           "move it aside to start a new ledger")
    if "readonly" in msg or "unable to open" in msg or "disk i/o" in msg:
        return LedgerError(f"ledger database {path} cannot be written or opened ({err})")
    return LedgerError(f"ledger database {path}: {err}")


class SqliteLedgerStore(LedgerStore):
    """:class:`LedgerStore` on an SQLite file; safe for threads and for several processes."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 5.0, synchronous: str = "full"):
        self.path = Path(path).expanduser().resolve()
        self.busy_timeout_s = float(busy_timeout_s)
        if synchronous.lower() not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', got {synchronous!r}")
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        try:
            private_file(self.path)  # user ids inside: 0600 in a 0700 folder
        except OSError as err:
            raise LedgerError(f"ledger database {self.path} cannot be created ({err.strerror})") from None
        self._conn()  # open now so that a corrupted or foreign file is reported at construction

    # -- connections -------------------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        if conn is not None:
            # inherited through fork(): closing it here could checkpoint or reset the WAL under the parent's
            # feet, so it is parked, never used and never closed (SQLite forbids using it across fork)
            _INHERITED.append(conn)
        conn = None
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per event.
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(f"ledger database {self.path}: could not enable WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._migrate(conn)
        except (sqlite3.Error, LedgerError) as err:
            if conn is not None:
                conn.close()
            if isinstance(err, LedgerError):
                raise
            raise _explain(self.path, err, self.busy_timeout_s) from None
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # statement by statement: executescript() would COMMIT our transaction half-way
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise LedgerError(f"ledger database {self.path} has schema {row[0]}, newer than this pet "
                                  f"({SCHEMA_VERSION}); upgrade pet")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _write(self, sql: str, params: tuple) -> bool:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise _explain(self.path, err, self.busy_timeout_s) from None
        return cur.rowcount == 1

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise _explain(self.path, err, self.busy_timeout_s) from None

    # -- LedgerStore -------------------------------------------------------------------------------------------

    def add_usage(self, event: UsageEvent) -> bool:
        """Insert one usage row unless its request id exists."""
        return self._write(
            "INSERT OR IGNORE INTO usage VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.request_id, event.ts, event.user, event.tier, event.prompt_tokens, event.completion_tokens,
             event.cost),
        )

    def add_reward(self, event: RewardEvent) -> bool:
        """Insert one reward row unless its event id exists."""
        return self._write(
            "INSERT OR IGNORE INTO rewards VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.event_id, event.ts, event.contributor, event.tier, event.samples, event.purpose, event.amount),
        )

    def add_shared(self, event: SharedEvent) -> bool:
        """Insert one shared-data row (sizes only) unless (request id, kind) exists."""
        return self._write("INSERT OR IGNORE INTO shared VALUES (?, ?, ?, ?, ?, ?)",
                           (event.request_id, event.kind, event.ts, event.user, event.tier, event.nbytes))

    @staticmethod
    def _where(user_col: str, user: str | None, since: float | None) -> tuple[str, tuple]:
        clauses, params = [], []
        if user is not None:
            clauses.append(f"{user_col} = ?")
            params.append(user)
        if since is not None:
            clauses.append("ts >= ?")
            params.append(since)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", tuple(params)

    def summary(self, user: str | None = None, since: float | None = None) -> list[SummaryRow]:
        """Aggregate both tables per (user, tier) in SQL and merge the two results."""
        rows: dict[tuple[str, str], SummaryRow] = {}
        where, params = self._where("user", user, since)
        for u, tier, n, pt, ct, cost in self._read(
            "SELECT user, tier, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost) FROM usage"
            f"{where} GROUP BY user, tier", params,
        ):
            rows[(u, tier)] = SummaryRow(u, tier, requests=n, prompt_tokens=pt, completion_tokens=ct, cost=cost)
        where, params = self._where("contributor", user, since)
        for u, tier, samples, amount in self._read(
            f"SELECT contributor, tier, SUM(samples), SUM(amount) FROM rewards{where} GROUP BY contributor, tier",
            params,
        ):
            row = rows.setdefault((u, tier), SummaryRow(u, tier))
            row.samples, row.rewards = samples, amount
        where, params = self._where("user", user, since)
        for u, tier, nbytes in self._read(f"SELECT user, tier, SUM(bytes) FROM shared{where} GROUP BY user, tier",
                                          params):
            rows.setdefault((u, tier), SummaryRow(u, tier)).shared_bytes = nbytes
        return [rows[k] for k in sorted(rows)]

    def events(self, user: str | None = None, since: float | None = None) -> Iterator[dict]:
        """Both tables merged by time; fetched eagerly so no read transaction stays open while a caller writes."""
        out: list[dict] = []
        where, params = self._where("user", user, since)
        for rid, ts, u, tier, pt, ct, cost in self._read(f"SELECT * FROM usage{where}", params):
            out.append({"kind": "usage", "id": rid, "ts": ts, "user": u, "tier": tier, "prompt_tokens": pt,
                        "completion_tokens": ct, "samples": 0, "purpose": "", "amount": -cost})
        where, params = self._where("contributor", user, since)
        for eid, ts, u, tier, samples, purpose, amount in self._read(f"SELECT * FROM rewards{where}", params):
            out.append({"kind": "reward", "id": eid, "ts": ts, "user": u, "tier": tier, "prompt_tokens": 0,
                        "completion_tokens": 0, "samples": samples, "purpose": purpose, "amount": amount})
        out.sort(key=lambda e: (e["ts"], e["id"]))
        return iter(out)

    def counts(self) -> Counts:
        """Row counts of both tables."""
        (u,), = self._read("SELECT COUNT(*) FROM usage")
        (r,), = self._read("SELECT COUNT(*) FROM rewards")
        return Counts(usage=u, rewards=r)

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            if self._local.pid == os.getpid():
                conn.close()
            else:
                _INHERITED.append(conn)
            self._local.conn = None
