"""The encrypted personal store: round trips, wrong keys, tampering, limits, atomicity, and its CLI."""

from __future__ import annotations

import json
import os

import pytest

from pet.personal.personalize.store import (
    PersonalStore,
    StoreAuthError,
    StoreError,
    StoreKey,
    UnknownUserError,
)

FAST_N = 1 << 10  # scrypt cost for tests only (the default is 2**15)


@pytest.fixture
def keyfile(tmp_path):
    return StoreKey.generate(tmp_path / "device.key")


@pytest.fixture
def store(tmp_path, keyfile):
    return PersonalStore(tmp_path / "store", StoreKey.from_file(keyfile), max_bytes=4000)


def test_roundtrip_append_list_delete_export(store, tmp_path):
    ids = store.append("alice", ["hello there", {"text": "see you at 8", "context": [
        {"role": "user", "content": "when?"}]}])
    ids += store.append("alice", "third one")
    recs = store.records("alice")
    assert [r["text"] for r in recs] == ["hello there", "see you at 8", "third one"]
    assert [r["id"] for r in recs] == ids and len(set(ids)) == 3
    assert recs[1]["context"] == [{"role": "user", "content": "when?"}]
    assert store.users() == ["alice"]
    assert store.delete("alice", ids[0]) == 1
    assert store.texts("alice") == ["see you at 8", "third one"]
    out = store.export("alice", tmp_path / "alice.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["text"] for x in lines] == ["see you at 8", "third one"]
    assert store.delete("alice") == 2 and store.users() == []


def test_file_is_encrypted_and_private(store):
    store.append("alice", "my secret diary entry")
    path = store.path("alice")
    assert b"secret diary" not in path.read_bytes()
    assert (path.stat().st_mode & 0o777) == 0o600


def test_wrong_key_is_clear_error_and_changes_nothing(store, tmp_path):
    store.append("alice", "hello there")
    before = store.path("alice").read_bytes()
    other = PersonalStore(store.root, StoreKey.from_file(StoreKey.generate(tmp_path / "other.key")))
    with pytest.raises(StoreAuthError, match="wrong key"):
        other.records("alice")
    with pytest.raises(StoreAuthError):
        other.append("alice", "intruder")
    with pytest.raises(StoreAuthError):
        other.delete("alice")
    assert store.path("alice").read_bytes() == before
    with pytest.raises(StoreAuthError, match="key file"):
        PersonalStore(store.root, StoreKey.from_passphrase("pw", FAST_N)).records("alice")


def test_passphrase_store(tmp_path):
    s = PersonalStore(tmp_path, StoreKey.from_passphrase("correct horse", FAST_N))
    s.append("bob", "hi")
    assert PersonalStore(tmp_path, StoreKey.from_passphrase("correct horse", FAST_N)).texts("bob") == ["hi"]
    with pytest.raises(StoreAuthError, match="wrong key or passphrase"):
        PersonalStore(tmp_path, StoreKey.from_passphrase("wrong horse", FAST_N)).texts("bob")
    with pytest.raises(StoreError, match="empty"):
        StoreKey.from_passphrase("")


@pytest.mark.parametrize("where", ["magic", "header", "nonce", "ciphertext", "tag", "truncate"])
def test_tampering_is_detected(store, where):
    store.append("alice", ["one", "two"])
    path = store.path("alice")
    blob = bytearray(path.read_bytes())
    nl = blob.index(b"\n", 10)
    pos = {"magic": 0, "header": 12, "nonce": nl + 3, "ciphertext": nl + 20, "tag": len(blob) - 1}.get(where)
    if where == "truncate":
        blob = blob[: nl + 20]
    else:
        blob[pos] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(StoreAuthError):
        store.records("alice")


def test_renamed_file_is_refused(store):
    """The user id is authenticated: alice's file copied to mallory's name does not decrypt."""
    store.append("alice", "hello")
    store.path("mallory").write_bytes(store.path("alice").read_bytes())
    with pytest.raises(StoreAuthError):
        store.records("mallory")


def test_bad_inputs_leave_store_unchanged(store):
    store.append("alice", "hello")
    before = store.path("alice").read_bytes()
    with pytest.raises(UnknownUserError, match="no personal data for user 'zoe'"):
        store.records("zoe")
    with pytest.raises(StoreError, match="empty"):
        store.append("alice", [])
    with pytest.raises(StoreError, match="text is empty"):
        store.append("alice", ["fine", "   "])
    with pytest.raises(StoreError, match="limit is 4000"):
        store.append("alice", "x" * 5000)
    with pytest.raises(StoreError, match="no record"):
        store.delete("alice", "nope")
    with pytest.raises(StoreError, match="user id"):
        store.append("../etc", "x")
    with pytest.raises(UnknownUserError):
        store.append("zoe", "x", create=False)
    assert store.path("alice").read_bytes() == before
    assert store.users() == ["alice"]


def test_crash_during_write_keeps_old_store(store, monkeypatch):
    store.append("alice", "hello")
    before = store.path("alice").read_bytes()

    def boom(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.append("alice", "world")
    monkeypatch.undo()
    assert store.path("alice").read_bytes() == before
    assert store.texts("alice") == ["hello"]
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]


def test_key_file_checks(tmp_path):
    (tmp_path / "short.key").write_bytes(b"abc")
    with pytest.raises(StoreError, match="exactly 32 bytes"):
        StoreKey.from_file(tmp_path / "short.key")
    with pytest.raises(StoreError, match="does not exist"):
        StoreKey.from_file(tmp_path / "missing.key")
    StoreKey.generate(tmp_path / "k")
    with pytest.raises(FileExistsError):
        StoreKey.generate(tmp_path / "k")


def test_store_cli(tmp_path, capsys):
    from pet.cli.main import main

    key, root = str(tmp_path / "k.key"), str(tmp_path / "store")
    common = ["--store", root, "--key-file", key]
    assert main(["store", "keygen", "--out", key]) == 0
    data = tmp_path / "d.txt"
    data.write_text("first message\nsecond message\n")
    assert main(["store", "add", *common, "--user", "u1", "--file", str(data)]) == 0
    assert main(["store", "add", *common, "--user", "u1", "--text", "third"]) == 0
    capsys.readouterr()
    assert main(["store", "list", *common, "--user", "u1"]) == 0
    out = capsys.readouterr().out
    assert "3 record(s)" in out and "first message" not in out
    before = (tmp_path / "store" / "u1.pstore").read_bytes()
    assert main(["store", "list", *common, "--user", "ghost"]) == 2
    assert "no personal data for user 'ghost'" in capsys.readouterr().err
    big = tmp_path / "big.txt"
    big.write_text("y" * 2_000_000)
    assert main(["store", "add", *common, "--user", "u1", "--file", str(big)]) == 2
    assert "limit is" in capsys.readouterr().err
    StoreKey.generate(tmp_path / "wrong.key")
    assert main(["store", "delete", "--store", root, "--key-file", str(tmp_path / "wrong.key"), "--user", "u1",
                 "--all"]) == 2
    assert "wrong key" in capsys.readouterr().err
    assert (tmp_path / "store" / "u1.pstore").read_bytes() == before
    assert main(["store", "export", *common, "--user", "u1", "--out", str(tmp_path / "e.jsonl")]) == 0
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 3
