"""ReplayGuard: window, duplicates, expiry, and eviction that never reopens a replay."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from pet.config.schema import PetConfig
from pet.security.envelope import DeviceCrypto, EnvelopeError
from pet.security.gateway import GatewayCrypto
from pet.security.keys import ensure_keys
from pet.security.replay import ReplayGuard, SqliteReplayGuard

NOW = 10_000_000


def test_window_and_duplicates():
    g = ReplayGuard(window_s=5, capacity=100)
    assert g.accept("a", NOW, NOW) is None
    assert g.accept("a", NOW, NOW + 1) == "replay"
    assert g.check("a", NOW, NOW) == "replay"
    assert g.accept("b", NOW - 5001, NOW) == "timestamp"
    assert g.accept("c", NOW + 5001, NOW) == "timestamp"
    assert g.accept("d", NOW + 5000, NOW) is None  # the edges are inside


def test_expired_ids_are_forgotten_but_still_refused():
    g = ReplayGuard(window_s=1, capacity=100)
    for i in range(50):
        assert g.accept(f"r{i}", NOW, NOW) is None
    assert g.accept("late", NOW + 2000, NOW + 2000) is None
    assert len(g) == 1  # the 50 old ids were dropped on expiry ...
    assert g.accept("r0", NOW, NOW + 2000) == "timestamp"  # ... and can never come back


def test_eviction_raises_the_floor():
    g = ReplayGuard(window_s=60, capacity=4)
    for i in range(4):
        assert g.accept(f"r{i}", NOW + i, NOW + 10) is None
    assert g.accept("r4", NOW + 4, NOW + 10) is None  # evicts r0 (oldest timestamp)
    assert len(g) == 4
    assert g.accept("r0", NOW, NOW + 10) == "replay"  # evicted, still refused (at the floor)
    assert g.accept("fresh-but-old", NOW, NOW + 10) == "replay"  # the documented price
    assert g.accept("fresh", NOW + 5, NOW + 10) is None


def test_bad_arguments():
    with pytest.raises(ValueError):
        ReplayGuard(window_s=0)
    with pytest.raises(ValueError):
        ReplayGuard(window_s=1, capacity=0)


def test_sqlite_guard_shared_between_instances(tmp_path):
    a = SqliteReplayGuard(tmp_path / "replay.sqlite", window_s=5)
    b = SqliteReplayGuard(tmp_path / "replay.sqlite", window_s=5)  # a second replica on the same host
    assert a.accept("r1", NOW, NOW) is None
    assert b.check("r1", NOW, NOW) == "replay" and b.accept("r1", NOW, NOW) == "replay"
    b._last_purge = 0.0  # purges are rate limited to one a second; allow one now
    assert b.accept("r2", NOW + 10_000, NOW + 10_000) is None  # purges r1 (older than the window) ...
    assert len(b) == 1
    assert a.accept("r1", NOW, NOW + 10_000) == "timestamp"  # ... which its timestamp still refuses
    a.close()
    b.close()


def _open_in_child(keys_dir: str, env: dict, out) -> None:
    cfg = PetConfig.model_validate({"crypto": {"keys_dir": keys_dir},
                                    "serve": {"gateway": {"deployment": {"num_replicas": 2}}}})
    try:
        GatewayCrypto.from_config(cfg).open(env)
        out.put("opened")
    except EnvelopeError as err:
        out.put(err.reason)


def test_two_replica_processes_refuse_a_cross_replica_replay(tmp_path):
    cfg = PetConfig.model_validate({"crypto": {"keys_dir": str(tmp_path / "keys")},
                                    "serve": {"gateway": {"deployment": {"num_replicas": 2}}}})
    ensure_keys(cfg)
    gw = GatewayCrypto.from_config(cfg)
    assert isinstance(gw.replay, SqliteReplayGuard)
    env, _ = DeviceCrypto(gw.public_keys(), "alice").seal({"prompt": "x"})
    gw.open(env)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_open_in_child, args=(str(tmp_path / "keys"), env, out))
    child.start()
    child.join(60)
    assert out.get(timeout=5) == "replay"
