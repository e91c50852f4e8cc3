"""ReplayGuard: window, duplicates, expiry, and eviction that never reopens a replay."""

from __future__ import annotations

import pytest

from pet.security.replay import ReplayGuard

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
