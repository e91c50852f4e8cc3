"""HPKE cipher suites (RFC 9180) offered by `pet`, and the raw (de)serialisation of their keys.

A suite name from :class:`pet.config.schema.HpkeSuite` maps to a ``cryptography`` HPKE ``Suite`` plus the
functions that generate, serialise and parse its key pairs. Keys travel as base64url without padding.

- ``x25519-hkdf-sha256-aes256gcm``: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM. Private key 32 bytes,
  public key 32 bytes.
- ``mlkem768-x25519-hkdf-sha256-aes256gcm``: the hybrid post-quantum KEM ML-KEM-768 + X25519. Private key is
  the 64-byte ML-KEM seed followed by the 32-byte X25519 key; public key is the 1184-byte ML-KEM encapsulation
  key followed by the 32-byte X25519 key.

Registering another suite means adding one :class:`SuiteSpec` to :data:`SUITES`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.hpke import (
    AEAD,
    KDF,
    KEM,
    MLKEM768X25519PrivateKey,
    MLKEM768X25519PublicKey,
    Suite,
)

DEFAULT_SUITE = "x25519-hkdf-sha256-aes256gcm"
HYBRID_SUITE = "mlkem768-x25519-hkdf-sha256-aes256gcm"


def b64e(data: bytes) -> str:
    """base64url without padding (JSON- and URL-safe)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: Any, max_len: int | None = None) -> bytes:
    """Strict inverse of :func:`b64e`; raises ValueError on anything that is not canonical base64url text."""
    if not isinstance(text, str) or (max_len is not None and len(text) > max_len):
        raise ValueError("not a base64url string of acceptable length")
    if not text.isascii() or "=" in text:
        raise ValueError("not unpadded base64url")
    try:
        out = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as err:
        raise ValueError("not base64url") from err
    if b64e(out) != text:  # refuse non-canonical encodings (stray bits, other alphabets): one text per value
        raise ValueError("non-canonical base64url")
    return out


class SecretKey:
    """A private key object with a repr that never shows key material (so it cannot leak into logs)."""

    __slots__ = ("key", "raw")

    def __init__(self, key: Any, raw: bytes):
        self.key = key
        self.raw = raw

    def __repr__(self) -> str:
        return "<SecretKey (hidden)>"

    __str__ = __repr__


@dataclass(frozen=True)
class SuiteSpec:
    """One HPKE suite: the cryptography Suite plus key generation and raw key codecs."""

    name: str
    suite: Suite
    private_len: int
    public_len: int
    generate: Callable[[], tuple[bytes, bytes]]  # -> (private raw, public raw)
    load_private: Callable[[bytes], Any]
    load_public: Callable[[bytes], Any]

    def private_key(self, raw: bytes) -> SecretKey:
        """Parse a raw private key (length checked)."""
        if len(raw) != self.private_len:
            raise ValueError(f"{self.name} private keys are {self.private_len} bytes, got {len(raw)}")
        return SecretKey(self.load_private(raw), raw)

    def public_key(self, raw: bytes) -> Any:
        """Parse a raw public key (length checked)."""
        if len(raw) != self.public_len:
            raise ValueError(f"{self.name} public keys are {self.public_len} bytes, got {len(raw)}")
        return self.load_public(raw)


# -- X25519 ---------------------------------------------------------------------------------------------------------


def _x_generate() -> tuple[bytes, bytes]:
    k = x25519.X25519PrivateKey.generate()
    return k.private_bytes_raw(), k.public_key().public_bytes_raw()


# -- ML-KEM-768 + X25519 --------------------------------------------------------------------------------------------


def _h_generate() -> tuple[bytes, bytes]:
    m = mlkem.MLKEM768PrivateKey.generate()
    x = x25519.X25519PrivateKey.generate()
    return (m.private_bytes_raw() + x.private_bytes_raw(),
            m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw())


def _h_private(raw: bytes) -> MLKEM768X25519PrivateKey:
    return MLKEM768X25519PrivateKey(mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:64]),
                                    x25519.X25519PrivateKey.from_private_bytes(raw[64:]))


def _h_public(raw: bytes) -> MLKEM768X25519PublicKey:
    return MLKEM768X25519PublicKey(mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184]),
                                   x25519.X25519PublicKey.from_public_bytes(raw[1184:]))


SUITES: dict[str, SuiteSpec] = {
    DEFAULT_SUITE: SuiteSpec(
        name=DEFAULT_SUITE, suite=Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM), private_len=32,
        public_len=32, generate=_x_generate, load_private=x25519.X25519PrivateKey.from_private_bytes,
        load_public=x25519.X25519PublicKey.from_public_bytes,
    ),
    HYBRID_SUITE: SuiteSpec(
        name=HYBRID_SUITE, suite=Suite(KEM.MLKEM768_X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM),
        private_len=96, public_len=1216, generate=_h_generate, load_private=_h_private, load_public=_h_public,
    ),
}


def get_suite(name: Any) -> SuiteSpec:
    """The :class:`SuiteSpec` for a suite name (an ``HpkeSuite`` enum or its string value)."""
    key = getattr(name, "value", name)
    try:
        return SUITES[key]
    except (KeyError, TypeError):
        raise ValueError(f"unknown HPKE suite {key!r}; known: {', '.join(SUITES)}") from None
