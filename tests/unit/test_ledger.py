"""The ledger: pricing, idempotency by id, concurrent writers in several processes, clear errors on a
corrupted or locked database, and the Meter wrapper that never raises into the request path."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from pet.config.schema import PetConfig
from pet.ledger import Ledger, LedgerError, LedgerStore, Meter, SqliteLedgerStore
from pet.ledger.ledger import default_ledger_path
from pet.ledger.store import Counts, SummaryRow


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite", {"p": 0.0, "e": 0.5, "t": 2.0}, reward_per_sample=0.25)


def test_usage_is_priced_per_tier_and_p_costs_nothing(led: Ledger):
    assert led.record_usage("r1", "alice", "t", 100, 400)
    assert led.record_usage("r2", "alice", "E", 1000, 1000)  # tier is case-insensitive
    assert led.record_usage("r3", "alice", "p", 5000, 5000)
    rows = {r.tier: r for r in led.summary()}
    assert rows["t"].cost == pytest.approx(1.0)  # 500 tokens at 2.0 per 1k
    assert rows["e"].cost == pytest.approx(1.0)  # 2000 tokens at 0.5 per 1k
    assert rows["p"].cost == 0.0 and rows["p"].tokens == 10000
    assert [(r.requests, r.prompt_tokens, r.completion_tokens) for r in led.summary()] == [
        (1, 1000, 1000), (1, 5000, 5000), (1, 100, 400)]


def test_retried_request_id_is_billed_once(led: Ledger):
    cost_before = metric("pet_ledger_cost_total", tier="t")
    dup_before = metric("pet_ledger_duplicates_total", kind="usage")
    assert led.record_usage("req-42", "bob", "t", 10, 90) is True
    # the retry carries the same id (possibly different counts): nothing changes
    assert led.record_usage("req-42", "bob", "t", 10, 90) is False
    assert led.record_usage("req-42", "bob", "e", 999, 999) is False
    [row] = led.summary()
    assert (row.requests, row.tokens, row.cost) == (1, 100, pytest.approx(0.2))
    assert led.counts().usage == 1
    assert metric("pet_ledger_cost_total", tier="t") - cost_before == pytest.approx(0.2)
    assert metric("pet_ledger_duplicates_total", kind="usage") - dup_before == 2


def test_contribution_rewards_balance_and_idempotency(led: Ledger):
    rewards_before = metric("pet_ledger_rewards_total", tier="e")
    assert led.credit_contribution("c1", "carol", 8, "expert_training:medical")
    assert not led.credit_contribution("c1", "carol", 8, "expert_training:medical")
    assert led.credit_contribution("c2", "carol", 4, "synthetic_data")
    assert led.record_usage("r1", "carol", "t", 500, 500)
    rows = {r.tier: r for r in led.summary(user="carol")}
    assert rows["e"].rewards == pytest.approx(2.0) and rows["e"].samples == 8
    assert rows["p"].rewards == pytest.approx(1.0)  # personal samples reward the P tier
    assert rows["t"].balance == pytest.approx(-2.0)
    assert metric("pet_ledger_rewards_total", tier="e") - rewards_before == pytest.approx(2.0)
    kinds = [e["kind"] for e in led.events(user="carol")]
    assert sorted(kinds) == ["reward", "reward", "usage"]


def test_since_and_user_filters(tmp_path: Path):
    now = [1000.0]
    led = Ledger(tmp_path / "l.sqlite", clock=lambda: now[0])
    led.record_usage("old", "u1", "t", 1, 1)
    now[0] = 2000.0
    led.record_usage("new", "u1", "t", 2, 2)
    led.record_usage("other", "u2", "e", 3, 3)
    assert [r.requests for r in led.summary(since=1500.0)] == [1, 1]
    assert [(r.user, r.tokens) for r in led.summary(user="u1")] == [("u1", 6)]
    assert [e["id"] for e in led.events(user="u1", since=1500.0)] == ["new"]


@pytest.mark.parametrize("call, message", [
    (lambda lg: lg.record_usage("", "u", "t", 1, 1), "request_id"),
    (lambda lg: lg.record_usage("r", "u", "x", 1, 1), "tier"),
    (lambda lg: lg.record_usage("r", "u", "t", -1, 1), "prompt_tokens"),
    (lambda lg: lg.record_usage("r", "u", "t", 1, 2.5), "completion_tokens"),
    (lambda lg: lg.record_usage("r", "u" * 201, "t", 1, 1), "user"),
    (lambda lg: lg.credit_contribution("c", "u", 0, "synthetic_data"), "samples"),
    (lambda lg: lg.credit_contribution("c", "u", 1, " "), "purpose"),
])
def test_bad_input_names_the_field_and_stores_nothing(led: Ledger, call, message):
    with pytest.raises(ValueError, match=message):
        call(led)
    assert (led.counts().usage, led.counts().rewards) == (0, 0)


def test_bad_prices_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="tier"):
        Ledger(tmp_path / "l.sqlite", {"p": 0, "e": 1})
    with pytest.raises(ValueError, match="price of tier t"):
        Ledger(tmp_path / "l.sqlite", {"p": 0, "e": 1, "t": -1})


def _writer(path: str, worker: int, n: int, shared: int) -> None:
    led = Ledger(path, synchronous="normal", busy_timeout_s=30)
    for i in range(n):
        led.record_usage(f"w{worker}-{i}", f"user{worker % 3}", "tet"[i % 3], 3, 7)
        if i < shared:
            # every replica also sees the same retried ids: each must be stored exactly once
            led.record_usage(f"shared-{i}", "retry", "t", 1, 1)


def test_eight_processes_lose_no_event_and_bill_retries_once(tmp_path: Path):
    path = str(tmp_path / "ledger.sqlite")
    Ledger(path).close()  # create the schema once, like a gateway at start
    # fresh processes like Serve replicas (forkserver): a child forked from a process that holds a connection
    # to the same file shares SQLite's in-memory lock bookkeeping with it and can lose commits
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["pet.ledger", __name__])
    procs = [ctx.Process(target=_writer, args=(path, w, 500, 50)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    led = Ledger(path)
    assert led.counts().usage == 8 * 500 + 50
    rows = led.summary()
    assert sum(r.requests for r in rows if r.user != "retry") == 4000
    assert sum(r.tokens for r in rows if r.user != "retry") == 4000 * 10
    assert sum(r.requests for r in rows if r.user == "retry") == 50


def test_corrupted_file_gives_a_clear_error_and_is_left_untouched(tmp_path: Path):
    path = tmp_path / "ledger.sqlite"
    garbage = b"this is not a database, but someone's bytes\n" * 100
    path.write_bytes(garbage)
    with pytest.raises(LedgerError, match=r"corrupted or not a SQLite file"):
        Ledger(path)
    assert path.read_bytes() == garbage


def test_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(LedgerError, match="schema 99, newer"):
        Ledger(path)


def test_locked_database_gives_a_clear_error_after_the_busy_timeout(tmp_path: Path):
    path = tmp_path / "ledger.sqlite"
    led = Ledger(path, busy_timeout_s=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LedgerError, match=r"is locked.*0.2 s"):
            led.record_usage("r1", "alice", "t", 1, 1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert led.record_usage("r1", "alice", "t", 1, 1)  # nothing was half-written


def test_meter_never_raises_counts_failures_and_recovers(tmp_path: Path):
    path = tmp_path / "ledger.sqlite"
    meter = Meter(lambda: Ledger(path, busy_timeout_s=0.2))
    assert meter.record_usage("r1", "alice", "t", 1, 2) is True
    before = metric("pet_ledger_failures_total", operation="record_usage")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    assert meter.record_usage("r2", "alice", "t", 1, 2) is None  # locked: answered anyway
    holder.execute("ROLLBACK")
    holder.close()
    assert meter.record_usage("r2", "alice", "t", 1, 2) is True  # recovered without a restart
    assert meter.record_usage("r3", "alice", "bogus-tier", 1, 2) is None  # even a caller bug never raises
    assert metric("pet_ledger_failures_total", operation="record_usage") - before == 2
    assert meter.failures == 2


def test_meter_over_a_corrupted_file_still_returns(tmp_path: Path):
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"\x00garbage" * 64)
    meter = Meter(lambda: Ledger(path))
    before = metric("pet_ledger_failures_total", operation="credit_contribution")
    assert meter.record_usage("r1", "alice", "t", 1, 2) is None
    assert meter.credit_contribution("c1", "alice", 3, "synthetic_data") is None
    assert asyncio.run(meter.arecord_usage("r2", "alice", "t", 1, 2)) is None
    assert meter.failures == 3
    assert metric("pet_ledger_failures_total", operation="credit_contribution") - before == 1


def test_meter_from_config_default_path_and_disabled(tmp_path: Path):
    cfg = PetConfig.model_validate({"models_dir": str(tmp_path / "models"),
                                    "ledger": {"prices": {"p": 0, "e": 1, "t": 3}}})
    assert default_ledger_path(cfg.models_dir) == tmp_path / ".pet" / "ledger.sqlite"
    meter = Meter.from_config(cfg)
    assert asyncio.run(meter.arecord_usage("r1", "u", "t", 500, 500)) is True
    assert meter.ledger.summary()[0].cost == pytest.approx(3.0)
    assert isinstance(meter.ledger.store, SqliteLedgerStore)
    assert (tmp_path / ".pet" / "ledger.sqlite").exists()
    cfg.ledger.enabled = False
    off = Meter.from_config(cfg)
    assert off.record_usage("r2", "u", "t", 1, 1) is None and off.failures == 0
    cfg2 = PetConfig.model_validate({"ledger": {"path": str(tmp_path / "x.sqlite"), "synchronous": "normal"}})
    assert Ledger.from_config(cfg2).store.synchronous == "NORMAL"


def test_credit_job_credits_each_contributor_once(led: Ledger):
    used = {"alice": 10, "bob": 4, "carol": 0}
    assert led.credit_job("expert-law-v1", used, "expert_training:law") == 2
    assert led.credit_job("expert-law-v1", used, "expert_training:law") == 0  # the job was retried
    rows = {r.user: r for r in led.summary()}
    assert set(rows) == {"alice", "bob"} and rows["alice"].rewards == pytest.approx(2.5)
    assert rows["bob"].tier == "e" and rows["bob"].samples == 4


def test_meter_records_a_generate_response(tmp_path: Path):
    meter = Meter(Ledger(tmp_path / "l.sqlite"))
    result = {"request_id": "g-1", "tier": "e", "text": "...", "usage": {"prompt_tokens": 7, "completion_tokens": 3,
                                                                          "seconds": 0.2}}
    assert asyncio.run(meter.arecord_result(result, None)) is True
    assert asyncio.run(meter.arecord_result(result, None)) is False
    assert asyncio.run(meter.arecord_result({"tier": "t"}, "u")) is None and meter.failures == 1
    [row] = meter.ledger.summary()
    assert (row.user, row.tier, row.tokens) == ("anonymous", "e", 10)


class DictStore(LedgerStore):
    """A second LedgerStore (in memory), standing in for a server database: Ledger must need nothing else."""

    def __init__(self) -> None:
        self.usage: dict = {}
        self.rewards: dict = {}

    def add_usage(self, event) -> bool:
        return self.usage.setdefault(event.request_id, event) is event

    def add_reward(self, event) -> bool:
        return self.rewards.setdefault(event.event_id, event) is event

    def summary(self, user=None, since=None):
        rows: dict = {}
        for e in self.usage.values():
            if (user is None or e.user == user) and (since is None or e.ts >= since):
                r = rows.setdefault((e.user, e.tier), SummaryRow(e.user, e.tier))
                r.requests += 1
                r.prompt_tokens += e.prompt_tokens
                r.completion_tokens += e.completion_tokens
                r.cost += e.cost
        for e in self.rewards.values():
            if (user is None or e.contributor == user) and (since is None or e.ts >= since):
                r = rows.setdefault((e.contributor, e.tier), SummaryRow(e.contributor, e.tier))
                r.samples += e.samples
                r.rewards += e.amount
        return [rows[k] for k in sorted(rows)]

    def events(self, user=None, since=None):
        return iter([])

    def counts(self) -> Counts:
        return Counts(len(self.usage), len(self.rewards))


def test_another_store_can_replace_sqlite_and_gives_the_same_totals(tmp_path: Path):
    def run(led: Ledger) -> list[tuple]:
        led.record_usage("a", "u1", "t", 100, 50)
        led.record_usage("a", "u1", "t", 100, 50)
        led.record_usage("b", "u1", "e", 10, 10)
        led.credit_job("job", {"u1": 3, "u2": 5}, "synthetic_data")
        return [(r.user, r.tier, r.requests, r.tokens, round(r.cost, 9), r.samples, round(r.rewards, 9))
                for r in led.summary()]

    assert run(Ledger(store=DictStore())) == run(Ledger(tmp_path / "l.sqlite"))


def test_metrics_exposition_has_tiers_but_never_user_ids(led: Ledger):
    from pet.ledger.metrics import exposition

    led.record_usage("m-1", "alice-private-id", "e", 10, 10)
    led.credit_contribution("m-c", "alice-private-id", 2, "expert_training:law")
    text = exposition().decode()
    assert 'pet_ledger_cost_total{tier="e"}' in text and 'pet_ledger_rewards_total{tier="e"}' in text
    assert "pet_ledger_failures_total" in text or "pet_ledger_failures" not in text
    assert "alice" not in text and "python_gc" not in text  # only the ledger's families
