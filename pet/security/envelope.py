"""Encrypted request/response envelopes between a device and the gateway (HPKE, RFC 9180, single-shot base mode).

Request envelope (JSON, every byte field base64url without padding)::

    {"v": 1, "suite": "x25519-hkdf-sha256-aes256gcm", "kid": "<16 hex>", "uid": "<user id>",
     "rid": "<request id>", "ts": <unix milliseconds>, "ct": "<HPKE enc || AEAD ciphertext>"}

The HPKE ``info`` is a fixed label plus the canonical JSON of ``[v, suite, kid, uid, rid, ts]``, so changing any
header field makes decryption fail (with the single-shot API, ``info`` is the authenticated context; RFC 9180
section 8.1). The plaintext is ``{"payload": {...}, "reply_key": "<fresh public key of the same suite>"}``: the
device makes a new key pair per request and the gateway seals the response to it (HPKE again, with an ``info``
that binds the request header and a sequence number), so only that device can read the answer and a response
cannot be swapped between requests. Response envelope: ``{"v": 1, "suite", "rid", "seq", "ct"}``.

Every refusal raises :class:`EnvelopeError` with one generic message; the specific reason goes only to the
Prometheus counter ``pet_envelope_rejections_total{reason}``. The one exception is a key id that is unknown or
retired: that is public information a device needs in order to refetch ``GET /v1/keys``, so
:class:`KeyIdError` says so plainly.

This module holds the wire format and the device side; it imports neither the server's counters nor its replay
store, so a device that only seals requests loads none of that. The gateway side (``GatewayCrypto``, which opens
requests and seals replies) is :mod:`pet.security.gateway`::

    gw = GatewayCrypto.from_config(cfg)
    payload, reply = gw.open(envelope)       # raises EnvelopeError
    return reply.seal(response)

Device side::

    dev = DeviceCrypto(public_keys, user_id)  # public_keys = body of GET /v1/keys
    envelope, pending = dev.seal(payload)
    response = pending.open(response_envelope)
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag

from pet.security.suites import SecretKey, SuiteSpec, b64d, b64e, get_suite

PROTOCOL_VERSION = 1
GENERIC_MESSAGE = "invalid encrypted envelope"
REQUEST_LABEL = b"pet/envelope/request/v1\x00"
REPLY_LABEL = b"pet/envelope/reply/v1\x00"
REQUEST_FIELDS = ("v", "suite", "kid", "uid", "rid", "ts", "ct")
REPLY_FIELDS = ("v", "suite", "rid", "seq", "ct")
ID_PATTERN = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
KID_PATTERN = re.compile(r"[0-9a-f]{16}")


class EnvelopeError(ValueError):
    """A refused envelope. ``str(err)`` is safe to send to the client; ``reason`` is for counters only."""

    status_code = 400

    def __init__(self, reason: str, message: str = GENERIC_MESSAGE):
        super().__init__(message)
        self.reason = reason


class KeyIdError(EnvelopeError):
    """The envelope names a key id the gateway does not know or has retired: fetch ``GET /v1/keys`` again."""


def canon(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces, ASCII): what HPKE ``info`` and plaintexts are built from."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def request_info(v: int, suite: str, kid: str, uid: str, rid: str, ts: int) -> bytes:
    """The HPKE ``info`` of a request: binds protocol version, suite, key id, user id, request id and timestamp."""
    return REQUEST_LABEL + canon([v, suite, kid, uid, rid, ts])


def reply_info(header: list[Any], seq: int) -> bytes:
    """The HPKE ``info`` of the ``seq``-th response to the request with ``header`` = [v, suite, kid, uid, rid, ts]."""
    return REPLY_LABEL + canon([*header, seq])


def check_fields(env: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """``env`` if it is a dict with exactly ``fields``, else EnvelopeError("malformed")."""
    if not isinstance(env, dict) or set(env) != set(fields):
        raise EnvelopeError("malformed")
    return env


def int_field(value: Any) -> int:
    """``value`` if it is a JSON integer, else EnvelopeError("malformed")."""
    # bool is an int subclass in Python; JSON true must not pass as 1.
    if type(value) is not int:
        raise EnvelopeError("malformed")
    return value


# ----------------------------------------------------------------------------------------------------------------
# Device side


class PendingReply:
    """Holds the per-request private reply key until the response arrives; opens response envelopes in order."""

    def __init__(self, spec: SuiteSpec, secret: SecretKey, header: list[Any]):
        self._spec = spec
        self._secret = secret
        self._header = header
        self._next_seq = 0

    @property
    def request_id(self) -> str:
        """The request id this reply belongs to."""
        return self._header[4]

    def open(self, response_envelope: Any) -> dict[str, Any]:
        """Decrypt the next response envelope; raises EnvelopeError if it is not the next one for this request."""
        env = check_fields(response_envelope, REPLY_FIELDS)
        seq = int_field(env["seq"])
        if (int_field(env["v"]) != PROTOCOL_VERSION or env["suite"] != self._spec.name
                or env["rid"] != self.request_id or seq != self._next_seq):
            raise EnvelopeError("reply_header")
        try:
            plain = self._spec.suite.decrypt(b64d(env["ct"]), self._secret.key, info=reply_info(self._header, seq))
            out = json.loads(plain)
        except (InvalidTag, ValueError, TypeError):
            raise EnvelopeError("reply_decrypt") from None
        if not isinstance(out, dict):
            raise EnvelopeError("reply_decrypt")
        self._next_seq += 1
        return out


class DeviceCrypto:
    """Seals a device's requests to the gateway's current public key (from ``GET /v1/keys``)."""

    def __init__(self, public_keys: dict[str, Any], user_id: str, clock: Callable[[], float] = time.time):
        if not isinstance(user_id, str) or not ID_PATTERN.fullmatch(user_id):
            raise ValueError("user_id must be 1-128 characters of letters, digits and ._:@-")
        try:
            kid = public_keys["current"]
            entry = next(k for k in public_keys["keys"] if k["kid"] == kid)
            self.spec = get_suite(entry["suite"])
            self.public = self.spec.public_key(b64d(entry["public_key"]))
        except (KeyError, TypeError, StopIteration, ValueError) as err:
            raise ValueError(f"not a valid GET /v1/keys body ({type(err).__name__}: {err})") from None
        self.kid = kid
        self.user_id = user_id
        self.clock = clock

    def seal(self, payload: dict[str, Any], request_id: str | None = None) -> tuple[dict[str, Any], PendingReply]:
        """Encrypt ``payload``; returns the request envelope and the pending reply that opens the response.

        The request id is ``request_id``, else ``payload["request_id"]``, else a fresh uuid4.
        """
        rid = request_id or payload.get("request_id") or uuid.uuid4().hex
        if not isinstance(rid, str) or not ID_PATTERN.fullmatch(rid):
            raise ValueError("request_id must be 1-128 characters of letters, digits and ._:@-")
        ts = int(self.clock() * 1000)
        priv, pub = self.spec.generate()
        header = [PROTOCOL_VERSION, self.spec.name, self.kid, self.user_id, rid, ts]
        plain = canon({"payload": payload, "reply_key": b64e(pub)})
        ct = self.spec.suite.encrypt(plain, self.public, info=request_info(*header))
        env = {"v": PROTOCOL_VERSION, "suite": self.spec.name, "kid": self.kid, "uid": self.user_id, "rid": rid,
               "ts": ts, "ct": b64e(ct)}
        return env, PendingReply(self.spec, self.spec.private_key(priv), header)
