"""Signed device bundles: a signed bundle verifies; unsigned, re-signed by another key, or altered ones do not."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from pet.cli.main import main
from pet.io import atomic_write_json, sha256_file
from pet.personal.bundle.sign import BundleSignatureError, load_public_key, sign_bundle, verify_bundle
from pet.security.keys import KeyRing
from pet.security.suites import b64e


@pytest.fixture
def bundle(tmp_path):
    """A bundle-shaped folder: two files and a bundle.json listing their sha256 with an empty signature slot."""
    root = tmp_path / "bundle"
    root.mkdir()
    (root / "model.onnx").write_bytes(b"\x08\x07fake onnx graph" * 100)
    (root / "tokenizer.json").write_text('{"model": {"vocab": {}}}')
    meta = {"format": 1, "model_id": "tiny", "tier": "P", "quantization": "int8", "parity": {"max_abs": 6.1e-05},
            "files": {n: sha256_file(root / n) for n in ("model.onnx", "tokenizer.json")}, "signature": None}
    atomic_write_json(root / "bundle.json", meta)
    return root


@pytest.fixture
def ring(tmp_path):
    r = KeyRing(tmp_path / "keys")
    r.init()
    return r


def test_signed_bundle_verifies_with_every_key_form(bundle, ring):
    entry = sign_bundle(bundle, ring)
    pub_path = ring.signing_public_key_path()
    pub = load_public_key(pub_path)
    for key in (pub_path, str(pub_path), pub, pub.public_bytes_raw(), b64e(pub.public_bytes_raw())):
        assert verify_bundle(bundle, key)["key_id"] == entry["key_id"]
    # re-indenting bundle.json does not change its meaning, so it still verifies
    meta = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps(meta))
    verify_bundle(bundle, pub_path)


def test_unsigned_bundle_refused(bundle, ring):
    with pytest.raises(BundleSignatureError, match="unsigned"):
        verify_bundle(bundle, ring.signing_public_key_path())


def test_bundle_signed_by_another_key_refused(bundle, ring, tmp_path):
    other = ed25519.Ed25519PrivateKey.generate()
    sign_bundle(bundle, other)
    with pytest.raises(BundleSignatureError, match="signed by another key"):
        verify_bundle(bundle, ring.signing_public_key_path())
    # an attacker who also copies the trusted key id into the entry is still refused
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["signature"]["key_id"] = json.loads(ring.signing_public_key_path().read_text())["key_id"]
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleSignatureError, match="altered"):
        verify_bundle(bundle, ring.signing_public_key_path())


@pytest.mark.parametrize("edit", ["field", "hash", "signature", "signed_at", "extra_key", "not_json"])
def test_altered_bundle_json_refused(bundle, ring, edit):
    sign_bundle(bundle, ring)
    path = bundle / "bundle.json"
    meta = json.loads(path.read_text())
    if edit == "field":
        meta["quantization"] = "none"
    elif edit == "hash":
        meta["files"]["model.onnx"] = "0" * 64
    elif edit == "signature":
        sig = bytearray(meta["signature"]["value"].encode())
        sig[5] = ord("A") if sig[5] != ord("A") else ord("B")
        meta["signature"]["value"] = sig.decode()
    elif edit == "signed_at":
        meta["signature"]["signed_at"] += 1
    elif edit == "extra_key":
        meta["backdoor"] = True
    path.write_text("{oops" if edit == "not_json" else json.dumps(meta))
    with pytest.raises(BundleSignatureError, match="altered"):
        verify_bundle(bundle, ring.signing_public_key_path())


def test_altered_or_missing_file_refused(bundle, ring):
    sign_bundle(bundle, ring)
    with open(bundle / "model.onnx", "r+b") as f:
        f.seek(10)
        f.write(b"X")
    with pytest.raises(BundleSignatureError, match="altered: model.onnx"):
        verify_bundle(bundle, ring.signing_public_key_path())
    assert verify_bundle(bundle, ring.signing_public_key_path(), check_files=False)  # signature alone still fine
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(BundleSignatureError, match="missing"):
        verify_bundle(bundle, ring.signing_public_key_path())


def test_default_trusted_key(bundle, ring, monkeypatch, tmp_path):
    sign_bundle(bundle, ring)
    monkeypatch.setenv("PET_BUNDLE_PUBLIC_KEY", str(ring.signing_public_key_path()))
    assert verify_bundle(bundle)["alg"] == "Ed25519"
    monkeypatch.setenv("PET_BUNDLE_PUBLIC_KEY", str(tmp_path / "absent.pub"))
    with pytest.raises(BundleSignatureError, match="no trusted bundle-signing public key"):
        verify_bundle(bundle)


def test_not_a_bundle_and_bad_keys(tmp_path, ring):
    with pytest.raises(BundleSignatureError, match="bundle.json is missing"):
        verify_bundle(tmp_path, ring.signing_public_key_path())
    with pytest.raises(ValueError):
        load_public_key("definitely-not-a-key")
    with pytest.raises(ValueError):
        load_public_key(tmp_path / "keys" / "keyring.json")


def test_cli_sign_and_verify(bundle, ring, capsys):
    d = str(ring.root)
    assert main(["keys", "verify-bundle", str(bundle), "--dir", d]) == 2
    assert "unsigned" in capsys.readouterr().err
    assert main(["keys", "sign-bundle", str(bundle), "--dir", d]) == 0
    assert main(["keys", "verify-bundle", str(bundle), "--dir", d]) == 0
    assert "signature valid" in capsys.readouterr().out
