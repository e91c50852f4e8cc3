"""An encrypted on-device store of a user's texts (AES-256-GCM at rest).

One file per user, ``<store>/<user>.pstore``::

    PETSTORE1\\n<header JSON>\\n<nonce 12 bytes><ciphertext + 16-byte GCM tag>

The header names the key source (``keyfile`` or ``scrypt`` with its salt and cost) and is bound to the
ciphertext as associated data, together with the user id, so a header edit, a renamed file or any flipped
byte fails authentication: :class:`StoreAuthError`, never a partial read. Every change decrypts the whole
file, edits the record list in memory and writes a fresh nonce + ciphertext atomically (:mod:`pet.io`), so
the file on disk is always either the old or the new store; on any error it is left untouched.

    key = StoreKey.from_file("device.key")            # 32 random bytes, see StoreKey.generate
    key = StoreKey.from_passphrase("correct horse")   # scrypt, salt kept per store file
    store = PersonalStore("~/.pet/store", key)
    rid = store.append("alice", "on my way, see you at 8")
    store.list("alice"); store.delete("alice", rid); store.export("alice", "alice.jsonl")
    store.set_share_profile("alice", True)            # opt in to questioner profiles on this device
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pet.io import atomic_write_bytes, atomic_write_text

MAGIC = b"PETSTORE1\n"
SUFFIX = ".pstore"
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")


class StoreError(ValueError):
    """A user-facing store problem (bad user id, unknown user, record not found, too large, ...)."""


class UnknownUserError(StoreError, KeyError):
    """The store holds no data for this user."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class StoreAuthError(StoreError):
    """Wrong key or tampered file: nothing was read."""


def check_user(user: str) -> str:
    """A user id is 1-128 letters, digits, ``_ . @ -`` (it names a file)."""
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise StoreError("user id must be 1-128 characters of letters, digits, '_', '.', '@' or '-'")
    return user


@dataclass(frozen=True)
class StoreKey:
    """Where the AES key comes from: 32 raw bytes (key file) or a passphrase stretched with scrypt."""

    raw: bytes | None = None
    passphrase: str | None = None
    scrypt_n: int = 1 << 15

    @staticmethod
    def generate(path: str | Path) -> Path:
        """Write a new random 32-byte key file (mode 0600); refuses to overwrite an existing one."""
        path = Path(path).expanduser()
        if path.exists():
            raise FileExistsError(f"{path} already exists; refusing to overwrite a key")
        atomic_write_bytes(path, secrets.token_bytes(32), mode=0o600)
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> StoreKey:
        """Read a 32-byte key file."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise StoreError(f"key file {path} does not exist (create one with: pet store keygen --out {path})")
        data = path.read_bytes()
        if len(data) != 32:
            raise StoreError(f"key file {path} must hold exactly 32 bytes (it holds {len(data)})")
        return cls(raw=data)

    @classmethod
    def from_passphrase(cls, passphrase: str, scrypt_n: int = 1 << 15) -> StoreKey:
        """A passphrase key (scrypt n=``scrypt_n``, r=8, p=1, salt per store file)."""
        if not passphrase:
            raise StoreError("the passphrase is empty")
        return cls(passphrase=passphrase, scrypt_n=scrypt_n)

    def new_header(self) -> dict[str, Any]:
        """Header for a new store file (fresh salt for a passphrase)."""
        if self.raw is not None:
            return {"kdf": "keyfile"}
        return {"kdf": "scrypt", "salt": secrets.token_hex(16), "n": self.scrypt_n, "r": 8, "p": 1}

    def derive(self, header: dict[str, Any]) -> bytes:
        """The 32-byte AES key for a file with ``header``."""
        kdf = header.get("kdf")
        if kdf == "keyfile":
            if self.raw is None:
                raise StoreAuthError("this store is encrypted with a key file, but a passphrase was given")
            return self.raw
        if kdf == "scrypt":
            if self.passphrase is None:
                raise StoreAuthError("this store is encrypted with a passphrase, but a key file was given")
            from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

            try:
                salt, n, r, p = bytes.fromhex(header["salt"]), int(header["n"]), int(header["r"]), int(header["p"])
            except (KeyError, TypeError, ValueError):
                raise StoreAuthError("store header is damaged (scrypt parameters)") from None
            if not (1 << 10 <= n <= 1 << 22 and r == 8 and p == 1 and len(salt) == 16):
                raise StoreAuthError("store header is damaged (scrypt parameters out of range)")
            return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(self.passphrase.encode("utf-8"))
        raise StoreAuthError("store header is damaged (unknown key derivation)")


class PersonalStore:
    """Encrypted per-user record lists under one folder; see the module docstring."""

    def __init__(self, root: str | Path, key: StoreKey, max_bytes: int = 1_000_000):
        self.root = Path(root).expanduser()
        self.key = key
        self.max_bytes = max_bytes

    # -- file format ---------------------------------------------------------------------------------------------

    def path(self, user: str) -> Path:
        """The store file of ``user``."""
        return self.root / f"{check_user(user)}{SUFFIX}"

    def users(self) -> list[str]:
        """Users with a store file, sorted (temp files of interrupted writes are hidden and ignored)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in self.root.glob(f"*{SUFFIX}") if not p.name.startswith("."))

    def _read(self, user: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        path = self.path(user)
        if not path.is_file():
            raise UnknownUserError(f"no personal data for user {user!r} in {self.root}")
        blob = path.read_bytes()
        if not blob.startswith(MAGIC):
            raise StoreAuthError(f"{path.name} is not a pet store file (or its header was tampered with)")
        end = blob.find(b"\n", len(MAGIC))
        if end < 0 or len(blob) < end + 1 + 12 + 16:
            raise StoreAuthError(f"{path.name} is truncated")
        header_bytes = blob[len(MAGIC):end]
        try:
            header = json.loads(header_bytes)
        except ValueError:
            raise StoreAuthError(f"{path.name}: header is damaged") from None
        if not isinstance(header, dict):
            raise StoreAuthError(f"{path.name}: header is damaged")
        key = self.key.derive(header)
        nonce, ct = blob[end + 1:end + 13], blob[end + 13:]
        try:
            plain = AESGCM(key).decrypt(nonce, ct, self._aad(user, header_bytes))
        except InvalidTag:
            raise StoreAuthError(
                f"cannot decrypt {path.name}: wrong key or passphrase, or the file was modified") from None
        return header, json.loads(plain)["records"]

    @staticmethod
    def _aad(user: str, header_bytes: bytes) -> bytes:
        return MAGIC + user.encode() + b"\n" + header_bytes

    def _write(self, user: str, header: dict[str, Any], records: list[dict[str, Any]]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        plain = json.dumps({"records": records}, ensure_ascii=False).encode("utf-8")
        if len(plain) > self.max_bytes:
            raise StoreError(f"the store of {user!r} would hold {len(plain)} bytes; the limit is {self.max_bytes} "
                             "(personalization.max_data_bytes)")
        header_bytes = json.dumps(header, sort_keys=True).encode()
        nonce = os.urandom(12)
        ct = AESGCM(self.key.derive(header)).encrypt(nonce, plain, self._aad(user, header_bytes))
        atomic_write_bytes(self.path(user), MAGIC + header_bytes + b"\n" + nonce + ct, mode=0o600)

    # -- operations ----------------------------------------------------------------------------------------------

    def records(self, user: str) -> list[dict[str, Any]]:
        """All records of ``user`` in insertion order: ``{"id", "text", "created", ["context"]}``."""
        return self._read(user)[1]

    def texts(self, user: str) -> list[str]:
        """Just the texts, in order."""
        return [r["text"] for r in self.records(user)]

    def append(self, user: str, texts: str | list[str] | list[dict[str, Any]], create: bool = True) -> list[str]:
        """Add one text or several (strings or ``{"text", "context"?}`` dicts) in one atomic write; their ids.

        ``create=False`` refuses an unknown user instead of starting a new store file.
        """
        items = [texts] if isinstance(texts, str) else list(texts)
        new = [normalize_record(x, i) for i, x in enumerate(items)]
        if not new:
            raise StoreError("nothing to add: the data is empty")
        try:
            header, records = self._read(user)
        except UnknownUserError:
            if not create:
                raise
            header, records = self.key.new_header(), []
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ids = []
        for rec in new:
            rec.update(id=secrets.token_hex(6), created=now)
            ids.append(rec["id"])
        self._write(user, header, records + new)
        return ids

    def delete(self, user: str, record_id: str | None = None) -> int:
        """Delete one record (by id) or, with no id, the user's whole store; number of records removed."""
        header, records = self._read(user)  # authenticates first: a wrong key deletes nothing
        if record_id is None:
            self.path(user).unlink()
            return len(records)
        kept = [r for r in records if r["id"] != record_id]
        if len(kept) == len(records):
            raise StoreError(f"user {user!r} has no record {record_id!r}")
        self._write(user, header, kept)
        return 1

    def share_profile(self, user: str) -> bool:
        """Whether ``user`` opted in on this device to send questioner profiles (pet.questioner; off by default).

        The choice lives in the store file's header, which the ciphertext authenticates: changing it takes the
        store's key, so no process without the key can turn sharing on.
        """
        return bool(self._read(user)[0].get("share_profile", False))

    def set_share_profile(self, user: str, on: bool) -> None:
        """Record the opt-in (or opt-out) for ``user``; one atomic rewrite, records unchanged."""
        header, records = self._read(user)
        self._write(user, {**header, "share_profile": bool(on)}, records)

    def export(self, user: str, out: str | Path) -> Path:
        """Write the user's records as plaintext JSON lines (atomically); the caller chose to decrypt them."""
        records = self.records(user)
        out = Path(out).expanduser()
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), mode=0o600)
        return out


def normalize_record(item: Any, index: int = 0) -> dict[str, Any]:
    """``"text"`` or ``{"text": str, "context": [chat turns]?}`` -> a record dict; StoreError naming the problem."""
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise StoreError(f"record {index}: expected a string or an object with a string 'text'")
    text = item["text"].strip()
    if not text:
        raise StoreError(f"record {index}: the text is empty")
    rec: dict[str, Any] = {"text": text}
    ctx = item.get("context")
    if ctx:  # the conversation before this message: chat turns, the user's own as "assistant"
        from pet.models.messages import validate_messages

        try:
            rec["context"] = validate_messages(ctx)
        except (ValueError, TypeError) as err:
            raise StoreError(f"record {index}: 'context' {err}") from None
    return rec
