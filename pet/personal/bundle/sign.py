"""Ed25519 signatures on device bundles: the cloud signs ``bundle.json``; devices refuse anything else.

``bundle.json`` lists the sha256 of every other bundle file, so signing it covers the whole bundle. The signature
goes into its ``signature`` slot::

    "signature": {"alg": "Ed25519", "key_id": "<16 hex>", "signed_at": <unix s>, "value": "<base64url>"}

over the message ``b"pet/bundle/v1\\x00"`` + canonical JSON of ``{"bundle": <bundle.json without signature>,
"key_id", "signed_at"}`` (sorted keys, no spaces, ASCII), so re-indenting the file does not matter but any change
of content does.

    sign_bundle(bundle_dir, signing_key)           # key: Ed25519PrivateKey, a KeyRing, or a signing.key path
    verify_bundle(bundle_dir, public_key)          # key: Ed25519PublicKey, 32 raw bytes, or a signing.pub path
    verify_bundle(bundle_dir)                      # key: $PET_BUNDLE_PUBLIC_KEY or <state dir>/keys/signing.pub
    sign_with_default_key(bundle_dir)              # what `pet export` does: the cloud's key, created on first use

:func:`verify_bundle` raises :class:`BundleSignatureError` saying whether the bundle is unsigned, signed by
another key, or altered. Only ``cryptography`` and the standard library are imported: the device runs this.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from pet.io import atomic_write_json, sha256_file
from pet.security.keys import KeyRing, signing_key_id
from pet.security.suites import b64d, b64e

MANIFEST = "bundle.json"
SIGNATURE_LABEL = b"pet/bundle/v1\x00"


class BundleSignatureError(Exception):
    """A bundle is unsigned, signed by a key the device does not trust, or altered after signing."""


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _message(meta: dict[str, Any], key_id: str, signed_at: float) -> bytes:
    body = {k: v for k, v in meta.items() if k != "signature"}
    return SIGNATURE_LABEL + _canon({"bundle": body, "key_id": key_id, "signed_at": signed_at})


def _read_manifest(bundle_dir: Path) -> dict[str, Any]:
    path = bundle_dir / MANIFEST
    if not path.is_file():
        raise BundleSignatureError(f"{bundle_dir} is not a bundle: {MANIFEST} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BundleSignatureError(f"{path} is not valid JSON ({err}); the bundle was altered or damaged") from None
    if not isinstance(meta, dict):
        raise BundleSignatureError(f"{path} is not a JSON object; the bundle was altered or damaged")
    return meta


def load_signing_key(key: Any) -> ed25519.Ed25519PrivateKey:
    """Accept an Ed25519PrivateKey, a :class:`KeyRing` or the path of a ``signing.key`` file (mode 0600)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, KeyRing):
        return key.signing_key()
    path = Path(key)
    if path.is_dir():
        return KeyRing(path).signing_key()
    ring = KeyRing(path.parent)
    if path.name != "signing.key":
        raise ValueError(f"{path} is not a signing.key file")
    return ring.signing_key()


def load_public_key(key: Any) -> ed25519.Ed25519PublicKey:
    """Accept an Ed25519PublicKey, 32 raw bytes, base64url text, or the path of a ``signing.pub`` file."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, bytes | bytearray):
        return ed25519.Ed25519PublicKey.from_public_bytes(bytes(key))
    if isinstance(key, str) and not Path(key).exists():
        try:
            return ed25519.Ed25519PublicKey.from_public_bytes(b64d(key))
        except ValueError:
            raise ValueError(f"public key {key!r} is neither a file nor base64url Ed25519 key text") from None
    path = Path(key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ed25519.Ed25519PublicKey.from_public_bytes(b64d(data["public_key"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a pet signing.pub file ({type(err).__name__})") from None


def sign_bundle(bundle_dir: str | Path, signing_key: Any) -> dict[str, Any]:
    """Sign ``bundle_dir/bundle.json`` in place (atomic rewrite); returns the signature entry."""
    root = Path(bundle_dir)
    key = load_signing_key(signing_key)
    meta = _read_manifest(root)
    kid = signing_key_id(key.public_key().public_bytes_raw())
    signed_at = round(time.time(), 3)
    sig = key.sign(_message(meta, kid, signed_at))
    entry = {"alg": "Ed25519", "key_id": kid, "signed_at": signed_at, "value": b64e(sig)}
    meta["signature"] = entry
    atomic_write_json(root / MANIFEST, meta, mode=0o644)
    return entry


def default_public_key_path() -> Path:
    """The trusted key when none is given: ``$PET_BUNDLE_PUBLIC_KEY``, else ``<state dir>/keys/signing.pub``."""
    import os

    from pet.paths import state_dir

    env = os.environ.get("PET_BUNDLE_PUBLIC_KEY")
    return Path(env).expanduser() if env else state_dir() / "keys" / "signing.pub"


def trusted_public_key_path(cfg: Any = None) -> Path:
    """The bundle-signing public key a device trusts.

    ``crypto.bundle_public_key`` of ``cfg``, else ``<crypto.keys_dir>/signing.pub`` when a keys folder is configured,
    else :func:`default_public_key_path` when ``$PET_BUNDLE_PUBLIC_KEY`` is set or there is no config, else the
    config's default keys folder.
    """
    import os

    from pet.security.keys import SIGNING_PUB_FILE, keys_dir_for

    if cfg is not None and cfg.crypto.bundle_public_key:
        return Path(cfg.crypto.bundle_public_key).expanduser().resolve()
    if cfg is not None and cfg.crypto.keys_dir:
        return keys_dir_for(cfg) / SIGNING_PUB_FILE
    if cfg is None or os.environ.get("PET_BUNDLE_PUBLIC_KEY"):
        return default_public_key_path()
    return keys_dir_for(cfg) / SIGNING_PUB_FILE


def signing_keys_dir(cfg: Any = None) -> Path:
    """The keys folder whose ``signing.key`` signs bundles (the cloud's).

    ``crypto.keys_dir`` of ``cfg`` when configured, else ``$PET_BUNDLE_SIGNING_KEY`` (a keys folder or its
    ``signing.key`` file), else the config's default keys folder (``<state dir>/keys``). Mirrors
    :func:`trusted_public_key_path`, so what ``pet export`` signs is what ``pet device ask`` trusts.
    """
    import os

    from pet.security.keys import keys_dir_for

    if cfg is not None and cfg.crypto.keys_dir:
        return keys_dir_for(cfg)
    env = os.environ.get("PET_BUNDLE_SIGNING_KEY")
    if env:
        path = Path(env).expanduser().resolve()
        return path.parent if path.name == "signing.key" else path
    if cfg is None:
        from pet.paths import state_dir

        return state_dir() / "keys"
    return keys_dir_for(cfg)


def sign_with_default_key(bundle_dir: str | Path, keys_dir: str | Path | None = None) -> dict[str, Any]:
    """Sign ``bundle_dir`` with the signing key in ``keys_dir`` (default :func:`signing_keys_dir`), creating the key
    pair there on first use (``signing.key`` 0600, ``signing.pub`` to give devices). Returns the signature entry."""
    ring = KeyRing(keys_dir if keys_dir is not None else signing_keys_dir())
    ring.ensure_signing_key()
    return sign_bundle(bundle_dir, ring)


def verify_bundle(bundle_dir: str | Path, public_key: Any = None, check_files: bool = True) -> dict[str, Any]:
    """Check the signature of ``bundle.json`` against the trusted ``public_key``; returns the signature entry.

    ``public_key`` None means :func:`default_public_key_path`. With ``check_files`` every file listed in
    ``bundle.json["files"]`` is re-hashed too, so an altered model file is caught here even when the caller does
    not hash (``DeviceModel.load`` hashes anyway and may pass False).
    """
    root = Path(bundle_dir)
    if public_key is None:
        public_key = default_public_key_path()
        if not public_key.is_file():
            raise BundleSignatureError(f"no trusted bundle-signing public key: {public_key} does not exist (pass "
                                       f"one, set $PET_BUNDLE_PUBLIC_KEY, or copy the cloud's signing.pub there)")
    trusted = load_public_key(public_key)
    trusted_kid = signing_key_id(trusted.public_bytes_raw())
    meta = _read_manifest(root)
    sig = meta.get("signature")
    if sig is None:
        raise BundleSignatureError(f"bundle {root} is unsigned: {MANIFEST} has no signature; the device only runs "
                                   f"bundles signed by the cloud (pet keys sign-bundle)")
    if not isinstance(sig, dict) or sig.get("alg") != "Ed25519" or not isinstance(sig.get("value"), str):
        raise BundleSignatureError(f"bundle {root} has a malformed signature entry; it was altered")
    if sig.get("key_id") != trusted_kid:
        raise BundleSignatureError(f"bundle {root} is signed by another key (key id {str(sig.get('key_id'))[:32]!r}, "
                                   f"trusted key id {trusted_kid!r})")
    try:
        trusted.verify(b64d(sig["value"], max_len=200), _message(meta, trusted_kid, sig.get("signed_at")))
    except (InvalidSignature, ValueError, TypeError):
        raise BundleSignatureError(f"bundle {root} was altered after signing (or re-signed by another key): the "
                                   f"signature of {MANIFEST} does not verify with key {trusted_kid}") from None
    if check_files:
        files = meta.get("files") or {}
        for rel, digest in sorted(files.items()):
            p = root / rel
            if not p.is_file():
                raise BundleSignatureError(f"bundle {root} was altered: signed file {rel} is missing")
            if sha256_file(p) != digest:
                raise BundleSignatureError(f"bundle {root} was altered: {rel} does not match its signed sha256")
    return sig
