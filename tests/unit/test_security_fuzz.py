"""Hypothesis fuzzing of the envelope parsers: random bytes, random JSON and mutated envelopes only ever give
EnvelopeError (never another exception), and the refusal counter's labels stay a fixed set."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from pet.security.envelope import REQUEST_FIELDS, DeviceCrypto, EnvelopeError
from pet.security.gateway import GatewayCrypto
from pet.security.keys import KeyRing
from pet.security.metrics import REASONS

T0 = 1_800_000_000.0
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ring = KeyRing(tmp_path_factory.mktemp("fuzz") / "keys")
    ring.init(now=T0)
    gw = GatewayCrypto(ring, "x25519-hkdf-sha256-aes256gcm", clock=lambda: T0)
    dev = DeviceCrypto(gw.public_keys(), "fuzzer", clock=lambda: T0)
    return gw, dev


def _open_bytes(gw: GatewayCrypto, raw: bytes) -> None:
    """What the gateway does with a body: JSON-decode (its own 400), then open the envelope."""
    try:
        data = json.loads(raw)
    except ValueError:
        return
    try:
        gw.open(data)
    except EnvelopeError:
        pass


@FUZZ
@given(raw=st.binary(max_size=600))
def test_random_bytes(pair, raw):
    _open_bytes(pair[0], raw)


@FUZZ
@given(value=json_values)
def test_random_json(pair, value):
    with pytest.raises(EnvelopeError):
        pair[0].open(value)


@FUZZ
@given(field=st.sampled_from(REQUEST_FIELDS), value=json_values)
def test_one_field_replaced(pair, field, value):
    gw, dev = pair
    env, _ = dev.seal({"prompt": "fuzz"})
    if env[field] == value:
        return
    with pytest.raises(EnvelopeError):
        gw.open({**env, field: value})


@FUZZ
@given(data=st.data())
def test_mutated_wire_bytes(pair, data):
    gw, dev = pair
    env, _ = dev.seal({"prompt": "fuzz"})
    wire = bytearray(json.dumps(env).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] ^= data.draw(st.integers(1, 255))  # a mask, not a value: the draw never depends on the bytes
    try:
        candidate = json.loads(bytes(wire))
    except ValueError:
        return
    if candidate == env:  # e.g. whitespace swapped for whitespace: the same envelope, legitimately opens once
        return
    with pytest.raises(EnvelopeError):
        gw.open(candidate)


@FUZZ
@given(value=json_values)
def test_reply_parser(pair, value):
    gw, dev = pair
    _, pending = dev.seal({"prompt": "fuzz"})
    with pytest.raises(EnvelopeError):
        pending.open(value)


def test_counter_labels_are_fixed():
    labels = {s.labels["reason"] for m in REGISTRY.collect() if m.name == "pet_envelope_rejections"
              for s in m.samples if "reason" in s.labels}
    assert labels and labels <= set(REASONS)
