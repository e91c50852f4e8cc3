"""Keys folder: modes, ids, rotation, ensure_keys, the `pet keys` CLI, no private material in output or reprs."""

from __future__ import annotations

import json
import os
import stat

import pytest

from pet.cli.main import main
from pet.config.schema import PetConfig
from pet.security.gateway import GatewayCrypto
from pet.security.keys import KeyRing, KeyStoreError, ensure_keys, key_id
from pet.security.suites import DEFAULT_SUITE, HYBRID_SUITE, SecretKey, get_suite


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _private_texts(root) -> list[str]:
    return [json.loads(p.read_text())["private_key"] for p in root.glob("*.key")]


def test_init_writes_private_files_0600(tmp_path):
    ring = KeyRing(tmp_path / "keys")
    rec = ring.init(DEFAULT_SUITE)
    assert _mode(ring.root) == 0o700
    assert _mode(ring.root / f"hpke-{rec.kid}.key") == 0o600
    assert _mode(ring.root / "signing.key") == 0o600
    assert _mode(ring.root / "keyring.json") == 0o644
    assert rec.kid == key_id(DEFAULT_SUITE, rec.public_key) and len(rec.kid) == 16
    # keyring.json is public: no private key text in it
    public = (ring.root / "keyring.json").read_text() + (ring.root / "signing.pub").read_text()
    assert all(secret not in public for secret in _private_texts(ring.root))
    with pytest.raises(KeyStoreError, match="pet keys rotate"):
        ring.init(DEFAULT_SUITE)


def test_too_open_private_key_refused(tmp_path):
    ring = KeyRing(tmp_path / "keys")
    rec = ring.init(DEFAULT_SUITE)
    path = ring.root / f"hpke-{rec.kid}.key"
    os.chmod(path, 0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        ring.private_key(rec)
    os.chmod(path, 0o600)
    assert isinstance(ring.private_key(rec), SecretKey)


def test_secret_reprs_hide_material(tmp_path):
    ring = KeyRing(tmp_path / "keys")
    rec = ring.init(HYBRID_SUITE)
    secret = ring.private_key(rec)
    gw = GatewayCrypto(ring, HYBRID_SUITE)
    texts = [repr(secret), str(secret), repr(gw), repr(ring), json.dumps(gw.public_keys())]
    for priv in _private_texts(ring.root):
        assert all(priv not in t for t in texts)
    assert secret.raw.hex() not in " ".join(texts)


def test_damaged_keyring_is_a_clear_error(tmp_path):
    ring = KeyRing(tmp_path / "keys")
    rec = ring.init(DEFAULT_SUITE)
    data = json.loads((ring.root / "keyring.json").read_text())
    data["keys"][0]["kid"] = "0" * 16  # id no longer matches the public key
    (ring.root / "keyring.json").write_text(json.dumps(data))
    with pytest.raises(KeyStoreError, match="does not match"):
        ring.records()
    (ring.root / "keyring.json").write_text("{not json")
    with pytest.raises(KeyStoreError, match="damaged"):
        ring.records()
    assert rec.kid


def test_rotate_prunes_expired_private_keys(tmp_path):
    ring = KeyRing(tmp_path / "keys")
    a = ring.init(DEFAULT_SUITE, now=1000.0)
    b = ring.rotate(DEFAULT_SUITE, grace_s=100, now=2000.0)
    assert (ring.root / f"hpke-{a.kid}.key").exists()  # a is inside its grace period
    c = ring.rotate(DEFAULT_SUITE, grace_s=100, now=3000.0)  # a's grace ended at 2100
    assert not (ring.root / f"hpke-{a.kid}.key").exists()
    assert (ring.root / f"hpke-{b.kid}.key").exists()
    recs = {r.kid: r for r in ring.records()}
    assert [recs[k].status(3000.0, 100) for k in (a.kid, b.kid, c.kid)] == ["retired", "previous", "current"]
    assert ring.current().kid == c.kid


def test_ensure_keys_idempotent_and_follows_suite(tmp_path):
    cfg = PetConfig.model_validate({"crypto": {"keys_dir": str(tmp_path / "k")}})
    first = ensure_keys(cfg)
    assert ensure_keys(cfg).kid == first.kid
    cfg.crypto.suite = HYBRID_SUITE
    second = ensure_keys(cfg)
    assert second.suite == HYBRID_SUITE and second.kid != first.kid
    statuses = {r.kid: r.status(second.created_at, cfg.crypto.key_grace_period_s)
                for r in KeyRing(tmp_path / "k").records()}
    assert statuses == {first.kid: "previous", second.kid: "current"}
    assert GatewayCrypto.from_config(cfg).public_keys()["current"] == second.kid


def test_suite_codecs_check_lengths():
    for name in (DEFAULT_SUITE, HYBRID_SUITE):
        spec = get_suite(name)
        priv, pub = spec.generate()
        assert (len(priv), len(pub)) == (spec.private_len, spec.public_len)
        with pytest.raises(ValueError):
            spec.public_key(pub[:-1])
        with pytest.raises(ValueError):
            spec.private_key(priv + b"\0")
    with pytest.raises(ValueError, match="unknown HPKE suite"):
        get_suite("rot13")


def test_cli_init_rotate_list(tmp_path, capsys):
    d = str(tmp_path / "cli-keys")
    assert main(["keys", "init", "--dir", d]) == 0
    assert main(["keys", "init", "--dir", d]) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["keys", "rotate", "--dir", d]) == 0
    assert "stays valid until" in capsys.readouterr().out
    assert main(["keys", "list", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert out.count("current") == 1 and out.count("previous") == 1
    for priv in _private_texts(KeyRing(d).root):
        assert priv not in out
    assert main(["keys", "list", "--dir", str(tmp_path / "none")]) == 0
    assert "pet keys init" in capsys.readouterr().out
