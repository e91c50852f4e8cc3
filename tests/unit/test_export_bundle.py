"""Bundle integrity and atomic export on the tiny model: missing / altered files, wrong opset, bad manifest,
existing output folders, failed exports leaving nothing behind, and signature enforcement."""

from __future__ import annotations

import json
import shutil

import pytest

from pet.personal.bundle.read import BundleError


@pytest.fixture(scope="module")
def plain_bundle(tiny_lm_dir, tmp_path_factory):
    """An fp32 bundle of the tiny model without the parity check (integrity tests only)."""
    from pet.personal.bundle.write import export_bundle

    return export_bundle(tiny_lm_dir, tmp_path_factory.mktemp("plain") / "b", quantize="none", parity=False)


@pytest.fixture
def bundle_copy(plain_bundle, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(plain_bundle, dst)
    return dst


def _load(path, **kw):
    from pet.personal.runtime import DeviceModel

    return DeviceModel.load(path, **kw)


def test_good_bundle_loads(bundle_copy):
    m = _load(bundle_copy)
    assert m.info.quantization == "none" and m.info.parity == {}
    assert m.generate("Hello", max_new_tokens=3).usage.prompt_tokens > 0


def test_missing_file(bundle_copy):
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is missing"):
        _load(bundle_copy)


def test_altered_file(bundle_copy):
    with open(bundle_copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx was altered: sha256"):
        _load(bundle_copy)


def test_wrong_opset_and_bad_manifest(bundle_copy):
    meta_path = bundle_copy / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta["opset"] = 7
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="opset 7 is not supported"):
        _load(bundle_copy)
    del meta["files"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="lacks keys: files"):
        _load(bundle_copy)
    meta_path.write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        _load(bundle_copy)
    meta_path.unlink()
    with pytest.raises(BundleError, match="bundle.json is missing"):
        _load(bundle_copy)
    with pytest.raises(BundleError, match="does not exist"):
        _load(bundle_copy / "nope")


def test_export_is_atomic(tiny_lm_dir, plain_bundle, tmp_path):
    from pet.personal.bundle.write import export_bundle
    from pet.personal.export.onnx import ExportError

    before = json.loads((plain_bundle / "bundle.json").read_text())
    with pytest.raises(FileExistsError):
        export_bundle(tiny_lm_dir, plain_bundle, quantize="none", parity=False)
    assert json.loads((plain_bundle / "bundle.json").read_text()) == before
    target = tmp_path / "broken"
    with pytest.raises(ExportError, match="unknown quantisation"):
        export_bundle(tiny_lm_dir, target, quantize="int3", parity=False)
    with pytest.raises(FileNotFoundError, match="is not a model folder"):
        export_bundle(tmp_path, target, quantize="none", parity=False)
    # A step failing inside the temp folder (bad fp32 source) leaves neither the target nor temp folders behind.
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"not onnx")
    with pytest.raises(ExportError):
        export_bundle(tiny_lm_dir, target, quantize="int8", parity=False, from_onnx=bad_onnx)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # replace=True swaps a finished bundle in place.
    replaced = export_bundle(tiny_lm_dir, tmp_path / "r", quantize="int8", parity=False,
                             from_onnx=plain_bundle / "model.onnx")
    export_bundle(tiny_lm_dir, replaced, quantize="none", parity=False, from_onnx=plain_bundle / "model.onnx",
                  replace=True)
    assert json.loads((replaced / "bundle.json").read_text())["quantization"] == "none"


def test_signature_enforced(bundle_copy, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from pet.personal.bundle.sign import sign_bundle

    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key()
    with pytest.raises(BundleError, match="another key"):
        _load(bundle_copy, public_key=pub)  # exported bundles carry the session key's signature, not this one
    sign_bundle(bundle_copy, key)
    assert _load(bundle_copy, public_key=pub).info.signature["alg"] == "Ed25519"
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(BundleError, match="another key"):
        _load(bundle_copy, public_key=other)
    meta = json.loads((bundle_copy / "bundle.json").read_text())
    meta["tier"] = "E"
    (bundle_copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="altered"):
        _load(bundle_copy, public_key=pub)


def test_export_signs_and_device_refuses_unsigned_or_altered(plain_bundle, bundle_copy, bundle_signing_keys):
    """Signed by default (issue 22, item 10): the default trusted key loads it; unsigned is refused saying
    unsigned unless allow_unsigned; an edited bundle.json is refused saying altered, even with the flag."""
    sig = json.loads((plain_bundle / "bundle.json").read_text())["signature"]
    assert sig["alg"] == "Ed25519"
    assert sig["key_id"] == json.loads(bundle_signing_keys.signing_public_key_path().read_text())["key_id"]
    assert _load(bundle_copy).info.signature == sig
    meta_path = bundle_copy / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta["parity"] = {"ppl_ratio": 1.0}  # a "better" parity claim: the signature no longer matches
    meta_path.write_text(json.dumps(meta))
    for allow in (False, True):
        with pytest.raises(BundleError, match="altered after signing"):
            _load(bundle_copy, allow_unsigned=allow)
    meta["signature"] = None
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="is unsigned.*--allow-unsigned"):
        _load(bundle_copy)
    assert _load(bundle_copy, allow_unsigned=True).info.signature is None


def test_export_unsigned_and_own_keys_dir(tiny_lm_dir, plain_bundle, tmp_path):
    from pet.personal.bundle.write import export_bundle
    from pet.security.keys import KeyRing

    onnx_path = plain_bundle / "model.onnx"
    unsigned = export_bundle(tiny_lm_dir, tmp_path / "u", quantize="none", parity=False, from_onnx=onnx_path,
                             sign=False)
    assert json.loads((unsigned / "bundle.json").read_text())["signature"] is None
    keys = tmp_path / "cloud-keys"  # created on first use
    own = export_bundle(tiny_lm_dir, tmp_path / "k", quantize="none", parity=False, from_onnx=onnx_path,
                        keys_dir=keys)
    ring = KeyRing(keys)
    assert (keys / "signing.key").stat().st_mode & 0o077 == 0
    assert _load(own, public_key=ring.signing_public_key_path()).info.signature is not None
    with pytest.raises(BundleError, match="another key"):
        _load(own)  # the session key is the trusted default here


def test_device_cli_refuses_unsigned(plain_bundle, tmp_path, capsys):
    from pet.cli.main import main

    b = tmp_path / "b"
    shutil.copytree(plain_bundle, b)
    meta = json.loads((b / "bundle.json").read_text())
    meta["signature"] = None
    (b / "bundle.json").write_text(json.dumps(meta))
    assert main(["device", "ask", "--bundle", str(b), "--max-new-tokens", "2", "Hello"]) == 2
    assert "unsigned" in capsys.readouterr().err
    assert main(["device", "ask", "--bundle", str(b), "--max-new-tokens", "2", "--allow-unsigned", "Hello"]) == 0
    assert main(["device", "ask", "--bundle", str(plain_bundle), "--max-new-tokens", "2", "Hello"]) == 0
