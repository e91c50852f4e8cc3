"""The key service's storage: HPKE key pairs with ids, rotation with a grace period, and the bundle-signing key.

Layout of the keys folder (mode 0700; default ``pet.paths.state_dir(cfg.models_dir) / "keys"``)::

    keyring.json          public: every key id, suite, public key, creation and retirement time
    hpke-<kid>.key        private HPKE key, mode 0600 (deleted once its grace period is over)
    signing.key           private Ed25519 bundle-signing key, mode 0600
    signing.pub           public Ed25519 key devices trust for bundles

A key is *current* while it has no retirement time, *previous* for ``key_grace_period_s`` after a rotation
retired it (still decrypts), then *retired* (refused with a clear error). Key ids are the first 16 hex digits of
sha256(suite name, public key), so a key id names exactly one key. Private key material is never logged: keys
are wrapped in :class:`~pet.security.suites.SecretKey`, whose repr hides them, and loading refuses a key file
that group or others can read.

Use ``pet keys init|rotate|list``, or :func:`ensure_keys` from ``pet deploy``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from pet.io import atomic_write_json
from pet.security.suites import DEFAULT_SUITE, SecretKey, b64d, b64e, get_suite

KEYRING_FILE = "keyring.json"
SIGNING_KEY_FILE = "signing.key"
SIGNING_PUB_FILE = "signing.pub"
KEYRING_FORMAT = 1


class KeyStoreError(RuntimeError):
    """The keys folder is missing, unreadable, too permissive or inconsistent; the message says what to do."""


def key_id(suite: str, public_raw: bytes) -> str:
    """The id of a public key: 16 hex digits of sha256 over the suite name and the key bytes."""
    return hashlib.sha256(suite.encode() + b"\x00" + public_raw).hexdigest()[:16]


def signing_key_id(public_raw: bytes) -> str:
    """The id of an Ed25519 bundle-signing public key."""
    return hashlib.sha256(b"ed25519\x00" + public_raw).hexdigest()[:16]


def keys_dir_for(cfg: Any) -> Path:
    """The keys folder of a :class:`~pet.config.schema.PetConfig`."""
    from pet.paths import state_dir

    if cfg.crypto.keys_dir:
        return Path(cfg.crypto.keys_dir).expanduser().resolve()
    return state_dir(cfg.models_dir) / "keys"


@dataclass
class KeyRecord:
    """Public facts of one HPKE key (no private material)."""

    kid: str
    suite: str
    public_key: bytes
    created_at: float
    retired_at: float | None = None

    def status(self, now: float, grace_s: float) -> str:
        """``current``, ``previous`` (retired but inside the grace period) or ``retired``."""
        if self.retired_at is None:
            return "current"
        return "previous" if now < self.retired_at + grace_s else "retired"

    def expires_at(self, grace_s: float) -> float | None:
        """When this key stops decrypting (None while current)."""
        return None if self.retired_at is None else self.retired_at + grace_s

    def to_json(self) -> dict[str, Any]:
        """The keyring.json entry."""
        return {"kid": self.kid, "suite": self.suite, "public_key": b64e(self.public_key),
                "created_at": self.created_at, "retired_at": self.retired_at}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KeyRecord:
        """Parse and check a keyring.json entry."""
        rec = cls(kid=str(d["kid"]), suite=str(d["suite"]), public_key=b64d(d["public_key"]),
                  created_at=float(d["created_at"]),
                  retired_at=None if d.get("retired_at") is None else float(d["retired_at"]))
        get_suite(rec.suite).public_key(rec.public_key)
        if key_id(rec.suite, rec.public_key) != rec.kid:
            raise ValueError(f"key id {rec.kid} does not match its public key")
        return rec


def _check_private_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyStoreError(f"private key file {path} has mode {mode:04o}; it must be readable by its owner only "
                            f"(run: chmod 600 {path})")


def _read_private_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KeyStoreError(f"private key file {path} is missing")
    _check_private_mode(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise KeyStoreError(f"private key file {path} is not readable JSON ({type(err).__name__})") from None


class KeyRing:
    """The HPKE keys and the bundle-signing key in one folder; every write is atomic and under a file lock."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"KeyRing({str(self.root)!r})"

    # -- reading ------------------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """True when a keyring file is present."""
        return (self.root / KEYRING_FILE).is_file()

    def records(self) -> list[KeyRecord]:
        """Every key ever created here, oldest first (empty if the keyring does not exist)."""
        path = self.root / KEYRING_FILE
        if not path.is_file():
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != KEYRING_FORMAT:
                raise ValueError(f"keyring format {data.get('format')!r} is not {KEYRING_FORMAT}")
            return [KeyRecord.from_json(d) for d in data["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise KeyStoreError(f"{path} is damaged: {err}") from None

    def mtime_ns(self) -> int:
        """Modification time of keyring.json (0 if absent); lets a gateway notice a rotation."""
        try:
            return (self.root / KEYRING_FILE).stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def private_key(self, rec: KeyRecord) -> SecretKey:
        """Load the private key of ``rec`` (refuses files readable by group or others)."""
        path = self.root / f"hpke-{rec.kid}.key"
        d = _read_private_json(path)
        try:
            secret = get_suite(rec.suite).private_key(b64d(d["private_key"]))
        except (KeyError, ValueError) as err:
            raise KeyStoreError(f"private key file {path} is damaged ({type(err).__name__})") from None
        if d.get("kid") != rec.kid:
            raise KeyStoreError(f"private key file {path} belongs to key {d.get('kid')!r}, not {rec.kid}")
        return secret

    def signing_key(self) -> ed25519.Ed25519PrivateKey:
        """The private Ed25519 bundle-signing key."""
        path = self.root / SIGNING_KEY_FILE
        d = _read_private_json(path)
        try:
            return ed25519.Ed25519PrivateKey.from_private_bytes(b64d(d["private_key"]))
        except (KeyError, ValueError) as err:
            raise KeyStoreError(f"signing key file {path} is damaged ({type(err).__name__})") from None

    def signing_public_key_path(self) -> Path:
        """Where the public bundle-signing key lives (give this file to devices)."""
        return self.root / SIGNING_PUB_FILE

    # -- writing ------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _write(self, recs: list[KeyRecord]) -> None:
        atomic_write_json(self.root / KEYRING_FILE, {"format": KEYRING_FORMAT, "keys": [r.to_json() for r in recs]},
                          mode=0o644)

    def _new_key(self, suite: str, now: float) -> KeyRecord:
        spec = get_suite(suite)
        priv, pub = spec.generate()
        rec = KeyRecord(kid=key_id(spec.name, pub), suite=spec.name, public_key=pub, created_at=now)
        atomic_write_json(self.root / f"hpke-{rec.kid}.key",
                          {"kid": rec.kid, "suite": spec.name, "private_key": b64e(priv)}, mode=0o600)
        return rec

    def _ensure_signing(self) -> bool:
        if (self.root / SIGNING_KEY_FILE).is_file():
            return False
        k = ed25519.Ed25519PrivateKey.generate()
        pub = k.public_key().public_bytes_raw()
        secret = {"alg": "Ed25519", "key_id": signing_key_id(pub), "private_key": b64e(k.private_bytes_raw())}
        atomic_write_json(self.root / SIGNING_KEY_FILE, secret, mode=0o600)
        atomic_write_json(self.root / SIGNING_PUB_FILE,
                          {"alg": "Ed25519", "key_id": signing_key_id(pub), "public_key": b64e(pub)}, mode=0o644)
        return True

    def ensure_signing_key(self) -> bool:
        """Create the bundle-signing key pair if this folder has none (no HPKE key is made); True if created."""
        with self._locked():
            return self._ensure_signing()

    def init(self, suite: str = DEFAULT_SUITE, now: float | None = None) -> KeyRecord:
        """Create the first HPKE key pair and the signing key; refuses when keys already exist."""
        with self._locked():
            if self.records():
                raise KeyStoreError(f"keys already exist in {self.root}; use `pet keys rotate` to replace them")
            rec = self._new_key(suite, time.time() if now is None else now)
            self._write([rec])
            self._ensure_signing()
            return rec

    def rotate(self, suite: str = DEFAULT_SUITE, grace_s: float = 0.0, now: float | None = None) -> KeyRecord:
        """Make a new current key; the old current one stays valid for ``grace_s`` seconds.

        Private files of keys whose grace period is already over are deleted here (their ids stay in the keyring
        so a device that still uses one gets a clear "retired" error rather than "unknown").
        """
        now = time.time() if now is None else now
        with self._locked():
            recs = self.records()
            for r in recs:
                if r.retired_at is None:
                    r.retired_at = now
                elif r.status(now, grace_s) == "retired":
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.root / f"hpke-{r.kid}.key")
            rec = self._new_key(suite, now)
            self._write([*recs, rec])
            self._ensure_signing()
            return rec

    def current(self, suite: str | None = None) -> KeyRecord | None:
        """The newest key that has not been retired (optionally of one suite)."""
        live = [r for r in self.records() if r.retired_at is None and (suite is None or r.suite == suite)]
        return max(live, key=lambda r: r.created_at) if live else None


def ensure_keys(cfg: Any) -> KeyRecord:
    """Make sure the configured keys folder holds a current key of ``cfg.crypto.suite`` and a signing key.

    Idempotent; called by ``pet deploy``. If the current key has another suite (the config changed), this
    rotates to a key of the configured suite, keeping the old one for the grace period.
    """
    ring = KeyRing(keys_dir_for(cfg))
    suite = get_suite(cfg.crypto.suite).name
    cur = ring.current(suite)
    if cur is not None and (ring.root / SIGNING_KEY_FILE).is_file():
        return cur
    if cur is not None:
        with ring._locked():
            ring._ensure_signing()
        return cur
    if not ring.records():
        return ring.init(suite)
    return ring.rotate(suite, grace_s=cfg.crypto.key_grace_period_s)
