"""HPKE envelopes: round trips for each suite, every altered byte refused, replay, time window, key ids, grace."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.hpke import KEM
from prometheus_client import REGISTRY

import pet.security.gateway as gateway_mod
from pet.security.envelope import GENERIC_MESSAGE, DeviceCrypto, EnvelopeError, KeyIdError
from pet.security.gateway import GatewayCrypto
from pet.security.keys import KeyRing
from pet.security.suites import DEFAULT_SUITE, HYBRID_SUITE, b64d, b64e

SUITE_NAMES = [DEFAULT_SUITE, HYBRID_SUITE]
T0 = 1_800_000_000.0


class Clock:
    """A settable clock shared by the device and the gateway."""

    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def rejections(reason: str) -> float:
    return REGISTRY.get_sample_value("pet_envelope_rejections_total", {"reason": reason}) or 0.0


@pytest.fixture(params=SUITE_NAMES)
def setup(request, tmp_path, monkeypatch):
    monkeypatch.setattr(gateway_mod, "RELOAD_INTERVAL_S", 0.0)
    clock = Clock()
    ring = KeyRing(tmp_path / "keys")
    ring.init(request.param, now=clock())
    gw = GatewayCrypto(ring, request.param, replay_window_s=300, grace_s=3600, clock=clock)
    dev = DeviceCrypto(gw.public_keys(), "alice", clock=clock)
    return gw, dev, clock, ring


def test_round_trip_and_bound_ids(setup):
    gw, dev, _, _ = setup
    env, pending = dev.seal({"prompt": "secret question", "tier": "t"})
    assert "secret question" not in json.dumps(env)
    payload, reply = gw.open(env)
    assert payload == {"prompt": "secret question", "tier": "t"}
    assert (reply.request_id, reply.user_id) == (env["rid"], "alice")
    out = reply.seal({"text": "secret answer"})
    assert "secret answer" not in json.dumps(out)
    assert pending.open(out) == {"text": "secret answer"}
    # a stream of several sealed chunks opens in order only
    c1, c2 = reply.seal({"piece": 1}), reply.seal({"piece": 2})
    with pytest.raises(EnvelopeError):
        pending.open(c2)
    assert pending.open(c1) == {"piece": 1}
    assert pending.open(c2) == {"piece": 2}
    with pytest.raises(EnvelopeError):
        pending.open(c2)


def test_every_flipped_byte_of_request_is_refused(setup):
    gw, dev, _, _ = setup
    env, _ = dev.seal({"prompt": "hello"}, request_id="req-flip")
    wire = json.dumps(env).encode()
    # every byte of the header; inside the base64 ciphertext every 8th byte (all raw ct bytes are flipped below)
    ct_start = wire.index(env["ct"].encode())
    ct_end = ct_start + len(env["ct"])
    positions = [i for i in range(len(wire)) if not ct_start <= i < ct_end or (i - ct_start) % 8 == 0]
    refused = 0
    for i in positions:
        bad = bytearray(wire)
        bad[i] ^= 0x01
        try:
            candidate = json.loads(bytes(bad))
        except ValueError:
            refused += 1  # the gateway's JSON reader refuses it before crypto
            continue
        with pytest.raises(EnvelopeError):
            gw.open(candidate)
        refused += 1
    assert refused == len(positions)
    # and every byte of the raw HPKE ciphertext region (enc, AEAD body, tag) too
    ct = b64d(env["ct"])
    enc_len = KEM.X25519.enc_length() if env["suite"] == DEFAULT_SUITE else KEM.MLKEM768_X25519.enc_length()
    # every byte, except every 4th only of the 1120-byte ML-KEM ciphertext (each try costs a decapsulation)
    enc_step = 1 if enc_len <= 32 else 4
    regions = {"enc": range(0, enc_len, enc_step), "body": range(enc_len, len(ct) - 16),
               "tag": range(len(ct) - 16, len(ct))}
    before = rejections("decrypt")
    for name, positions in regions.items():
        assert len(positions) > 0, name
        for i in positions:
            bad = bytearray(ct)
            bad[i] ^= 0x80
            with pytest.raises(EnvelopeError) as info:
                gw.open({**env, "ct": b64e(bytes(bad))})
            assert str(info.value) == GENERIC_MESSAGE
    assert rejections("decrypt") - before == sum(len(r) for r in regions.values())
    # the untouched envelope still opens: refusals burned neither the request id nor the key
    payload, _ = gw.open(env)
    assert payload["prompt"] == "hello"


@pytest.mark.parametrize("field,value", [
    ("v", 2), ("suite", HYBRID_SUITE), ("uid", "mallory"), ("rid", "other-id"), ("ts", "now"), ("kid", "zz"),
    ("ct", "!!"), ("v", True),
])
def test_header_changes_are_refused_generically(setup, field, value):
    gw, dev, clock, _ = setup
    env, _ = dev.seal({"prompt": "x"})
    if field == "suite" and env["suite"] == HYBRID_SUITE:
        value = DEFAULT_SUITE
    with pytest.raises(EnvelopeError) as info:
        gw.open({**env, field: value})
    assert str(info.value) == GENERIC_MESSAGE and not isinstance(info.value, KeyIdError)
    # a timestamp moved by one millisecond changes the HPKE info: refused as well
    with pytest.raises(EnvelopeError):
        gw.open({**env, "ts": env["ts"] + 1})


def test_missing_or_extra_fields_refused(setup):
    gw, dev, _, _ = setup
    env, _ = dev.seal({"prompt": "x"})
    for k in env:
        with pytest.raises(EnvelopeError):
            gw.open({f: v for f, v in env.items() if f != k})
    with pytest.raises(EnvelopeError):
        gw.open({**env, "extra": 1})
    for junk in (None, [], "envelope", 3, {"pet_envelope": env}):
        with pytest.raises(EnvelopeError):
            gw.open(junk)


def test_replay_refused_and_counted(setup):
    gw, dev, _, _ = setup
    env, _ = dev.seal({"prompt": "x"})
    gw.open(env)
    before = rejections("replay")
    with pytest.raises(EnvelopeError) as info:
        gw.open(env)
    assert info.value.reason == "replay" and str(info.value) == GENERIC_MESSAGE
    assert rejections("replay") == before + 1
    # a fresh envelope reusing the request id is a replay too
    env2, _ = dev.seal({"prompt": "y"}, request_id=env["rid"])
    with pytest.raises(EnvelopeError):
        gw.open(env2)


def test_timestamp_outside_window_refused(setup):
    gw, dev, clock, _ = setup
    env, _ = dev.seal({"prompt": "x"})
    clock.t += 301
    with pytest.raises(EnvelopeError) as info:
        gw.open(env)
    assert info.value.reason == "timestamp"
    clock.t -= 2 * 301  # a device clock far ahead of the gateway
    with pytest.raises(EnvelopeError):
        gw.open(env)
    clock.t += 301 + 299  # back inside the window: accepted once
    gw.open(env)


def test_unknown_key_id_clear_error(setup, tmp_path):
    gw, _, clock, _ = setup
    other = KeyRing(tmp_path / "other")
    other.init(gw.suite, now=clock())
    stranger = GatewayCrypto(other, gw.suite, clock=clock)
    env, _ = DeviceCrypto(stranger.public_keys(), "bob", clock=clock).seal({"prompt": "x"})
    with pytest.raises(KeyIdError) as info:
        gw.open(env)
    assert info.value.reason == "unknown_key"
    assert env["kid"] in str(info.value) and "GET /v1/keys" in str(info.value)


def test_rotation_grace_then_retired(setup):
    gw, dev, clock, ring = setup
    old_kid = dev.kid
    env_old, pending = dev.seal({"prompt": "before rotation"})
    clock.t += 10
    new = ring.rotate(gw.suite, grace_s=gw.grace_s, now=clock())
    keys = gw.public_keys()  # the gateway notices the rotation without a restart
    assert keys["current"] == new.kid
    assert {k["kid"]: k["status"] for k in keys["keys"]} == {new.kid: "current", old_kid: "previous"}
    payload, reply = gw.open(env_old)  # previous key inside the grace period: works
    assert payload["prompt"] == "before rotation"
    assert pending.open(reply.seal({"ok": True})) == {"ok": True}
    # a device with the new keys uses the new key id
    env_new, _ = DeviceCrypto(keys, "alice", clock=clock).seal({"prompt": "after"})
    assert env_new["kid"] == new.kid
    gw.open(env_new)
    # after the grace period the old key id is retired: a clear error, and it leaves GET /v1/keys
    clock.t += gw.grace_s + 1
    env_late, _ = dev.seal({"prompt": "too late"})
    with pytest.raises(KeyIdError) as info:
        gw.open(env_late)
    assert info.value.reason == "retired_key" and "retired" in str(info.value) and old_kid in str(info.value)
    assert [k["kid"] for k in gw.public_keys()["keys"]] == [new.kid]


def test_payload_ids_must_match_header(setup):
    gw, dev, _, _ = setup
    env, _ = dev.seal({"prompt": "x", "user": "mallory"})
    with pytest.raises(EnvelopeError) as info:
        gw.open(env)
    assert info.value.reason == "payload"
    env, _ = dev.seal({"prompt": "x", "request_id": "abc"}, request_id="abd")
    with pytest.raises(EnvelopeError):
        gw.open(env)
    env, _ = dev.seal({"prompt": "x", "request_id": "abc", "user": "alice"})
    assert env["rid"] == "abc" and gw.open(env)[0]["request_id"] == "abc"


def test_reply_bound_to_its_request(setup):
    gw, dev, _, _ = setup
    env1, pending1 = dev.seal({"prompt": "one"})
    env2, pending2 = dev.seal({"prompt": "two"})
    _, reply1 = gw.open(env1)
    _, reply2 = gw.open(env2)
    sealed2 = reply2.seal({"text": "for two"})
    with pytest.raises(EnvelopeError):
        pending1.open(sealed2)
    with pytest.raises(EnvelopeError):  # even with the request id rewritten, the HPKE info differs
        pending1.open({**sealed2, "rid": env1["rid"]})
    sealed1 = reply1.seal({"text": "for one"})
    wire = json.dumps(sealed1).encode()
    for i in range(len(wire)):
        bad = bytearray(wire)
        bad[i] ^= 0x01
        try:
            candidate = json.loads(bytes(bad))
        except ValueError:
            continue
        with pytest.raises(EnvelopeError):
            pending1.open(candidate)
    assert pending1.open(sealed1) == {"text": "for one"}


def test_too_large_and_suite_mismatch(setup, tmp_path):
    gw, dev, clock, _ = setup
    gw.max_envelope_bytes = 64
    env, _ = dev.seal({"prompt": "x" * 200})
    with pytest.raises(EnvelopeError) as info:
        gw.open(env)
    assert info.value.reason == "too_large"


def test_device_rejects_bad_key_list():
    for bad in ({}, {"current": "x", "keys": []}, {"current": "a", "keys": [{"kid": "a", "suite": "nope"}]}):
        with pytest.raises(ValueError):
            DeviceCrypto(bad, "alice")
    with pytest.raises(ValueError):
        DeviceCrypto({"current": "a", "keys": []}, "bad user id with spaces")


def test_gateway_without_keys_says_what_to_do(tmp_path):
    with pytest.raises(RuntimeError, match="pet keys init"):
        GatewayCrypto(KeyRing(tmp_path / "empty"), DEFAULT_SUITE)


def test_the_device_side_loads_no_server_state():
    """Sealing on a device imports neither the replay store nor the server's envelope counters (nor Ray or torch)."""
    import subprocess
    import sys

    code = ("import sys, pet.security.envelope, pet.client, pet.personal.device; "
            "print(sorted(m for m in ('pet.security.metrics', 'pet.security.replay', 'prometheus_client', 'ray', "
            "'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
