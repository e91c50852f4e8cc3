"""The gateway side of the envelope protocol (:mod:`pet.security.envelope`): open requests, seal replies.

    gw = GatewayCrypto.from_config(cfg)
    payload, reply = gw.open(envelope)       # raises EnvelopeError
    return reply.seal(response)

:class:`GatewayCrypto` reads the key ring (re-reading it when ``pet keys rotate`` changes it while serving), refuses
replays (:mod:`pet.security.replay`) and counts refusals by reason (:mod:`pet.security.metrics`); those are server
concerns, kept here so the device side loads none of them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag

from pet.security.envelope import (
    ID_PATTERN,
    KID_PATTERN,
    PROTOCOL_VERSION,
    REQUEST_FIELDS,
    EnvelopeError,
    KeyIdError,
    canon,
    check_fields,
    int_field,
    reply_info,
    request_info,
)
from pet.security.keys import KeyRecord, KeyRing, keys_dir_for
from pet.security.metrics import count_open, count_rejection
from pet.security.replay import ReplayGuard, SqliteReplayGuard
from pet.security.suites import SecretKey, SuiteSpec, b64d, b64e, get_suite

# Keyring re-reads (to notice `pet keys rotate` while serving) happen at most this often.
RELOAD_INTERVAL_S = 1.0


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
        ct = self._spec.suite.encrypt(canon(response), self._public, info=reply_info(self._header, seq))
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
        env = check_fields(envelope, REQUEST_FIELDS)
        v, suite, kid, uid, rid = env["v"], env["suite"], env["kid"], env["uid"], env["rid"]
        ts = int_field(env["ts"])
        if int_field(v) != PROTOCOL_VERSION:
            raise EnvelopeError("version")
        if not all(isinstance(x, str) for x in (suite, kid, uid, rid, env["ct"])):
            raise EnvelopeError("malformed")
        if not (KID_PATTERN.fullmatch(kid) and ID_PATTERN.fullmatch(uid) and ID_PATTERN.fullmatch(rid)):
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
