"""POST /v1/generate is metered in the ledger per user and tier, once per request id, and the gateway's
/metrics carries the ledger counters without user ids."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from pet.ledger import Ledger

pytestmark = pytest.mark.integration


def _rows(cfg, rid: str, wait_s: float = 10.0) -> list[dict]:
    """Ledger rows of ``rid``; the gateway writes them just after answering, so wait for the first one."""
    deadline = time.monotonic() + wait_s
    while True:
        led = Ledger.from_config(cfg)
        try:
            rows = [e for e in led.events() if e["id"] == rid]
        finally:
            led.close()
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_generate_is_metered_once_per_request_id(serve_url, serve_config):
    rid, user = f"it-gen-{uuid.uuid4().hex}", f"user-{uuid.uuid4().hex[:8]}"
    body = {"prompt": "Name a colour.", "tier": "t", "max_new_tokens": 4, "user": user, "request_id": rid}
    first = httpx.post(f"{serve_url}/v1/generate", json=body, timeout=120).json()
    assert first["request_id"] == rid and first["tier"] == "t"
    _rows(serve_config, rid)  # the first write has landed
    again = httpx.post(f"{serve_url}/v1/generate", json=body, timeout=120)
    assert again.status_code == 200
    time.sleep(1.0)  # give a (wrong) second write the time to land
    [row] = _rows(serve_config, rid)
    assert (row["user"], row["tier"]) == (user, "t")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (first["usage"]["prompt_tokens"],
                                                                first["usage"]["completion_tokens"])
    assert row["amount"] < 0  # a charge
    metrics = httpx.get(f"{serve_url}/metrics", timeout=30).text
    assert 'pet_ledger_requests_total{tier="t"}' in metrics
    assert user not in metrics
