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

Gateway side::

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
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag

from pet.security.keys import KeyRecord, KeyRing, keys_dir_for
from pet.security.metrics import count_open, count_rejection
from pet.security.replay import ReplayGuard, SqliteReplayGuard
from pet.security.suites import SecretKey, SuiteSpec, b64d, b64e, get_suite

PROTOCOL_VERSION = 1
GENERIC_MESSAGE = "invalid encrypted envelope"
REQUEST_LABEL = b"pet/envelope/request/v1\x00"
REPLY_LABEL = b"pet/envelope/reply/v1\x00"
REQUEST_FIELDS = ("v", "suite", "kid", "uid", "rid", "ts", "ct")
REPLY_FIELDS = ("v", "suite", "rid", "seq", "ct")
_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_KID = re.compile(r"[0-9a-f]{16}")
# Keyring re-reads (to notice `pet keys rotate` while serving) happen at most this often.
RELOAD_INTERVAL_S = 1.0


class EnvelopeError(ValueError):
    """A refused envelope. ``str(err)`` is safe to send to the client; ``reason`` is for counters only."""

    status_code = 400

    def __init__(self, reason: str, message: str = GENERIC_MESSAGE):
        super().__init__(message)
        self.reason = reason


class KeyIdError(EnvelopeError):
    """The envelope names a key id the gateway does not know or has retired: fetch ``GET /v1/keys`` again."""


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def request_info(v: int, suite: str, kid: str, uid: str, rid: str, ts: int) -> bytes:
    """The HPKE ``info`` of a request: binds protocol version, suite, key id, user id, request id and timestamp."""
    return REQUEST_LABEL + _canon([v, suite, kid, uid, rid, ts])


def reply_info(header: list[Any], seq: int) -> bytes:
    """The HPKE ``info`` of the ``seq``-th response to the request with ``header`` = [v, suite, kid, uid, rid, ts]."""
    return REPLY_LABEL + _canon([*header, seq])


def _check_fields(env: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(env, dict) or set(env) != set(fields):
        raise EnvelopeError("malformed")
    return env


def _int_field(value: Any) -> int:
    # bool is an int subclass in Python; JSON true must not pass as 1.
    if type(value) is not int:
        raise EnvelopeError("malformed")
    return value


# ----------------------------------------------------------------------------------------------------------------
# Gateway


class Reply:
    """Seals responses to the device that sent one opened request (to its per-request reply key)."""

    def __init__(self, spec: SuiteSpec, reply_public: Any, header: list[Any]):
        self._spec = spec
        self._public = reply_public
        self._header = header
        self._seq = 0
        self._lock = threading.Lock()

    @property
    def request_id(self) -> str:
        """The request id of the opened envelope (bound into its HPKE info; unique within the replay window)."""
        return self._header[4]

    @property
    def user_id(self) -> str:
        """The user id the envelope names (bound into its HPKE info; HPKE base mode does not authenticate it)."""
        return self._header[3]

    def seal(self, response: dict[str, Any]) -> dict[str, Any]:
        """Encrypt ``response`` (a JSON-able dict) to the device; call again for further chunks of a stream."""
        with self._lock:
            seq = self._seq
            self._seq += 1
        ct = self._spec.suite.encrypt(_canon(response), self._public, info=reply_info(self._header, seq))
        return {"v": PROTOCOL_VERSION, "suite": self._spec.name, "rid": self.request_id, "seq": seq, "ct": b64e(ct)}


class GatewayCrypto:
    """Opens request envelopes inside the gateway process and publishes the public keys (``GET /v1/keys``)."""

    def __init__(self, keyring: KeyRing, suite: str, replay_window_s: float = 300.0, grace_s: float = 86400.0,
                 replay_cache_size: int = 100_000, max_envelope_bytes: int = 1 << 20,
                 clock: Callable[[], float] = time.time, replay: ReplayGuard | SqliteReplayGuard | None = None):
        self.keyring = keyring
        self.suite = get_suite(suite).name
        self.grace_s = grace_s
        self.max_envelope_bytes = max_envelope_bytes
        self.replay = replay if replay is not None else ReplayGuard(replay_window_s, replay_cache_size)
        self.clock = clock
        self._records: dict[str, KeyRecord] = {}
        self._secrets: dict[str, SecretKey] = {}
        self._mtime = -1
        self._checked = 0.0
        self._lock = threading.Lock()
        self._reload(force=True)
        if self.current() is None:
            raise RuntimeError(f"no current {self.suite} key in {keyring.root}; run `pet keys init`")

    def __repr__(self) -> str:
        return f"GatewayCrypto(keys={str(self.keyring.root)!r}, suite={self.suite!r})"

    @classmethod
    def from_config(cls, cfg: Any) -> GatewayCrypto:
        """Load the keys of ``cfg.crypto.keys_dir`` (default: ``pet.paths.state_dir()/"keys"``).

        With more than one gateway replica (``num_replicas > 1`` or autoscaling) the replay store is shared
        through ``<keys_dir>/replay.sqlite`` (:class:`SqliteReplayGuard`), else it is in memory.
        """
        c = cfg.crypto
        ring = KeyRing(keys_dir_for(cfg))
        dep = cfg.serve.gateway.deployment
        replay = None
        if dep.num_replicas > 1 or dep.autoscaling_config is not None:
            replay = SqliteReplayGuard(ring.root / "replay.sqlite", c.replay_window_s)
        return cls(ring, c.suite, replay_window_s=c.replay_window_s, grace_s=c.key_grace_period_s,
                   replay_cache_size=c.replay_cache_size, max_envelope_bytes=c.max_envelope_bytes, replay=replay)

    # -- keys -----------------------------------------------------------------------------------------------------

    def _reload(self, force: bool = False) -> None:
        """Re-read keyring.json if it changed (a rotation while serving); rate limited."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._checked < RELOAD_INTERVAL_S:
                return
            self._checked = now
            mtime = self.keyring.mtime_ns()
            if mtime == self._mtime:
                return
            self._records = {r.kid: r for r in self.keyring.records()}
            self._secrets = {k: v for k, v in self._secrets.items() if k in self._records}
            self._mtime = mtime

    def current(self) -> KeyRecord | None:
        """The key devices should encrypt to now."""
        live = [r for r in self._records.values() if r.retired_at is None and r.suite == self.suite]
        return max(live, key=lambda r: r.created_at) if live else None

    def public_keys(self) -> dict[str, Any]:
        """Body of ``GET /v1/keys``: the current key id and every key that still decrypts."""
        self._reload()
        now = self.clock()
        cur = self.current()
        keys = [{"kid": r.kid, "suite": r.suite, "public_key": b64e(r.public_key),
                 "status": r.status(now, self.grace_s), "created_at": r.created_at,
                 "expires_at": r.expires_at(self.grace_s)}
                for r in sorted(self._records.values(), key=lambda r: r.created_at, reverse=True)
                if r.status(now, self.grace_s) != "retired"]
        return {"version": PROTOCOL_VERSION, "suite": self.suite, "current": cur.kid if cur else None, "keys": keys}

    def _key_for(self, kid: str, suite: str, now: float) -> tuple[SuiteSpec, SecretKey]:
        rec = self._records.get(kid)
        if rec is None:
            self._reload()
            rec = self._records.get(kid)
        if rec is None:
            raise KeyIdError("unknown_key", f"unknown key id {kid}; fetch the current keys from GET /v1/keys")
        if rec.status(now, self.grace_s) == "retired":
            raise KeyIdError("retired_key", f"key id {kid} is retired; fetch the current keys from GET /v1/keys")
        if rec.suite != suite:
            raise EnvelopeError("suite")
        secret = self._secrets.get(kid)
        if secret is None:
            secret = self._secrets[kid] = self.keyring.private_key(rec)
        return get_suite(rec.suite), secret

    # -- requests -------------------------------------------------------------------------------------------------

    def open(self, envelope: Any) -> tuple[dict[str, Any], Reply]:
        """Check, decrypt and replay-check a request envelope; returns (payload, reply sealer).

        The payload is returned as the device sealed it (routes validate their own fields). If it names a
        ``request_id`` or ``user``, they must equal the envelope's ``rid`` / ``uid`` (else refused); the header
        values are ``reply.request_id`` and ``reply.user_id``, for metering when the payload omits them.
        """
        try:
            payload, reply = self._open(envelope)
        except EnvelopeError as err:
            count_rejection(err.reason)
            raise
        count_open(reply._spec.name)
        return payload, reply

    def _open(self, envelope: Any) -> tuple[dict[str, Any], Reply]:
        env = _check_fields(envelope, REQUEST_FIELDS)
        v, suite, kid, uid, rid = env["v"], env["suite"], env["kid"], env["uid"], env["rid"]
        ts = _int_field(env["ts"])
        if _int_field(v) != PROTOCOL_VERSION:
            raise EnvelopeError("version")
        if not all(isinstance(x, str) for x in (suite, kid, uid, rid, env["ct"])):
            raise EnvelopeError("malformed")
        if not (_KID.fullmatch(kid) and _ID.fullmatch(uid) and _ID.fullmatch(rid)):
            raise EnvelopeError("malformed")
        if len(env["ct"]) > self.max_envelope_bytes:
            raise EnvelopeError("too_large")
        try:
            spec_name = get_suite(suite).name
        except ValueError:
            raise EnvelopeError("suite") from None
        now = self.clock()
        now_ms = int(now * 1000)
        why = self.replay.check(rid, ts, now_ms)
        if why:
            raise EnvelopeError(why)
        spec, secret = self._key_for(kid, spec_name, now)
        try:
            ct = b64d(env["ct"])
        except ValueError:
            raise EnvelopeError("malformed") from None
        header = [v, spec_name, kid, uid, rid, ts]
        try:
            plain = spec.suite.decrypt(ct, secret.key, info=request_info(*header))
        except (InvalidTag, ValueError):
            raise EnvelopeError("decrypt") from None
        payload, reply_public = self._parse_plaintext(plain, spec, uid, rid)
        why = self.replay.accept(rid, ts, now_ms)  # recorded only after a successful decrypt: forgeries burn no ids
        if why:
            raise EnvelopeError(why)
        return payload, Reply(spec, reply_public, header)

    @staticmethod
    def _parse_plaintext(plain: bytes, spec: SuiteSpec, uid: str, rid: str) -> tuple[dict[str, Any], Any]:
        try:
            inner = json.loads(plain)
            if not isinstance(inner, dict) or set(inner) != {"payload", "reply_key"}:
                raise ValueError("bad inner shape")
            payload = inner["payload"]
            if not isinstance(payload, dict):
                raise ValueError("payload is not an object")
            reply_public = spec.public_key(b64d(inner["reply_key"]))
        except (ValueError, TypeError, RecursionError):
            raise EnvelopeError("payload") from None
        for field, bound in (("request_id", rid), ("user", uid)):
            if payload.get(field) is not None and payload[field] != bound:
                raise EnvelopeError("payload")
        return payload, reply_public


# ----------------------------------------------------------------------------------------------------------------
# Device


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
        env = _check_fields(response_envelope, REPLY_FIELDS)
        seq = _int_field(env["seq"])
        if (_int_field(env["v"]) != PROTOCOL_VERSION or env["suite"] != self._spec.name
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
        if not isinstance(user_id, str) or not _ID.fullmatch(user_id):
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
        if not isinstance(rid, str) or not _ID.fullmatch(rid):
            raise ValueError("request_id must be 1-128 characters of letters, digits and ._:@-")
        ts = int(self.clock() * 1000)
        priv, pub = self.spec.generate()
        header = [PROTOCOL_VERSION, self.spec.name, self.kid, self.user_id, rid, ts]
        plain = _canon({"payload": payload, "reply_key": b64e(pub)})
        ct = self.spec.suite.encrypt(plain, self.public, info=request_info(*header))
        env = {"v": PROTOCOL_VERSION, "suite": self.spec.name, "kid": self.kid, "uid": self.user_id, "rid": rid,
               "ts": ts, "ct": b64e(ct)}
        return env, PendingReply(self.spec, self.spec.private_key(priv), header)
