"""POST /v1/augment on the real Serve graph: the device's HPKE-sealed request through the gateway to the
Augmenter, which prompts the real Traditional deployment and filters with MiniLM."""

from __future__ import annotations

import json

import httpx
import pytest

from pet.client import GatewayError
from pet.personal.personalize.client import HttpAugmentClient

SHARED = [
    "going hiking with my dog this weekend, can't wait",
    "pizza night again lol, pepperoni obviously",
    "my dog keeps stealing socks from the laundry",
    "ugh mondays. need coffee",
]

pytestmark = pytest.mark.integration


def test_encrypted_augment_roundtrip(serve_url, serve_config):
    client = HttpAugmentClient(serve_url, "user-it-1", timeout_s=300)
    sent = []
    client.on_send.append(sent.append)
    reply = client.request({"shared": SHARED, "n": 1, "seed": 0})  # 2 candidates per round: keeps the suite fast
    assert sent == [{"shared": SHARED, "n": 1, "seed": 0}]
    assert isinstance(reply["samples"], list) and len(reply["samples"]) <= 1
    assert all(isinstance(s, str) and s and s not in SHARED for s in reply["samples"])
    stats = reply["stats"]
    assert stats["candidates"] >= 2 and stats["kept"] == len(reply["samples"]) and stats["rounds"] >= 1
    # The shared samples are credited to their contributor when they produced synthetic data.
    from pet.ledger import Ledger

    led = Ledger.from_config(serve_config)
    try:
        rewards = [e for e in led.events(user="user-it-1") if e["kind"] == "reward"]
    finally:
        led.close()
    assert len(rewards) == (1 if reply["samples"] else 0)
    if rewards:
        assert rewards[0]["samples"] == len(SHARED) and rewards[0]["purpose"] == "synthetic_data"


def test_bad_payload_is_json_400_without_echo(serve_url):
    secret = "my-secret-sample-text"
    r = httpx.post(f"{serve_url}/v1/augment", json={"shared": [secret], "n": -1}, timeout=60)
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["code"] == "invalid_request" and "'n'" in body["error"]["message"]
    assert secret not in r.text
    r = httpx.post(f"{serve_url}/v1/augment", content=b"{not json", timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_tampered_envelope_is_refused(serve_url):
    from pet.security.envelope import DeviceCrypto

    keys = httpx.get(f"{serve_url}/v1/keys", timeout=60).json()
    envelope, _ = DeviceCrypto(keys, "user-it-2").seal({"shared": SHARED, "n": 1, "seed": 0})
    env = json.loads(json.dumps(envelope))
    mid = len(env["ct"]) // 2
    env["ct"] = env["ct"][:mid] + ("A" if env["ct"][mid] != "A" else "B") + env["ct"][mid + 1:]
    r = httpx.post(f"{serve_url}/v1/augment", json={"pet_envelope": env}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_envelope"


def test_client_reports_http_errors(serve_url):
    client = HttpAugmentClient(serve_url + "/nope", "user-it-3", timeout_s=60)
    try:
        client.request({"shared": SHARED, "n": 1, "seed": 0})
    except GatewayError as err:
        assert "HTTP 404" in str(err)
    else:
        raise AssertionError("expected GatewayError")
