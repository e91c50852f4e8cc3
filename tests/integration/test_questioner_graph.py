"""A questioner profile through the real Serve graph: sealed in the device's HPKE envelope, used by T and E, counted
by its size in the ledger, refused with a sealed 422 when malformed, and never written anywhere in clear.

The unit tests (tests/unit/test_questioner.py) drive the gateway's routes without Ray on plaintext bodies; this
one posts envelopes to the running graph (the integration config keeps ``questioner.mode: in_context``), so the
profile crosses the proxy, the gateway, the ExpertPool and Traditional replicas as it would from a device.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.test_security_canary import _files_containing, _ray_logs_dir

pytestmark = pytest.mark.integration


def _profile(canary: str, dim: int) -> dict:
    from pet.questioner.profile import make_profile

    v = np.ones(dim, dtype=np.float32)
    exemplars = [f"I always bring {canary} to the allotment on Sundays.", "Honestly I prefer tea over coffee."]
    return make_profile(v, exemplars, np.stack([v, v]), 280).to_payload()


def _shared_bytes(cfg, user: str, wait_s: float = 15.0) -> int:
    """The ledger's shared bytes for ``user`` (the gateway writes just after answering: wait for them)."""
    from pet.ledger import Ledger

    deadline = time.monotonic() + wait_s
    while True:
        led = Ledger.from_config(cfg)
        try:
            n = sum(r.shared_bytes for r in led.summary(user=user))
        finally:
            led.close()
        if n or time.monotonic() > deadline:
            return n
        time.sleep(0.2)


def test_a_sealed_profile_conditions_t_and_e_and_only_its_size_is_kept(serve_url, serve_config):
    from pet.questioner.profile import payload_bytes
    from pet.security.envelope import DeviceCrypto

    assert serve_config.questioner.mode == "in_context"
    canary = f"QCANARY{uuid.uuid4().hex}"
    needle = canary.encode()
    user = f"q-{uuid.uuid4().hex[:8]}"
    profile = _profile(canary, serve_config.questioner.embedding_dim)
    http = httpx.Client(timeout=600)
    dev = DeviceCrypto(http.get(f"{serve_url}/v1/keys").json(), user)

    def ask(payload: dict) -> tuple[int, dict, bytes]:
        env, pending = dev.seal({"user": user, "max_new_tokens": 4, **payload})
        r = http.post(f"{serve_url}/v1/generate", json={"pet_envelope": env})
        assert set(r.json()) == {"pet_envelope"}  # answers and refusals alike are sealed
        return r.status_code, pending.open(r.json()["pet_envelope"]), r.content

    prompt = "What should I plant this weekend?"
    tokens = {}
    for tier, extra in (("t", {}), ("e", {"domain": "python"})):
        status, plain, _ = ask({"prompt": prompt, "tier": tier, **extra})
        assert status == 200, plain
        status, shared, wire = ask({"prompt": prompt, "tier": tier, "questioner": profile, **extra})
        assert status == 200, shared
        assert shared["tier"] == tier and needle not in wire
        tokens[tier] = (plain["usage"]["prompt_tokens"], shared["usage"]["prompt_tokens"])
    # in context: the exemplars reached each tier's prompt (the canary exemplar alone is > 20 tokens)
    assert all(with_p > without + 20 for without, with_p in tokens.values()), tokens

    bad = dict(profile, embedding=[0.5] * 3)  # too few dimensions
    status, err, wire = ask({"prompt": prompt, "tier": "t", "questioner": bad})
    assert status == 422 and err["error"]["code"] == "invalid_profile"
    assert "embedding" in err["error"]["message"] and needle not in wire and canary not in str(err)

    # the ledger holds the two accepted profiles' size, nothing of their content
    assert _shared_bytes(serve_config, user) == 2 * payload_bytes(profile)
    metrics = http.get(f"{serve_url}/metrics")
    assert metrics.status_code == 200 and needle not in metrics.content
    time.sleep(3)  # Ray's log monitors flush
    hits, scanned = _files_containing(_ray_logs_dir(), needle)
    assert scanned > 5 and hits == []
    serve_root = Path(serve_config.expert.registry_dir).parent  # keys, registry, ledger of this graph
    hits, scanned = _files_containing(serve_root, needle)
    assert scanned > 0 and hits == []
