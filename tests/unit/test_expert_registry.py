"""The expert registry: atomic add/replace/remove, sha256 verification, crash safety, the classifier on top."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pet.expert.registry import (
    CorruptAdapterError,
    DomainExistsError,
    ExpertRegistry,
    InvalidDomainNameError,
    UnknownDomainError,
    check_name,
)
from pet.router.domains import DomainClassifier

REPO = Path(__file__).resolve().parents[2]


def make_adapter(folder: Path, payload: bytes = b"weights") -> Path:
    """A folder shaped like a PEFT adapter (contents are not loaded by the registry)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (folder / "adapter_model.safetensors").write_bytes(payload)
    return folder


def snapshot(root: Path) -> dict[str, bytes]:
    """Every visible file below root with its bytes: 'registry unchanged' means equal snapshots."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


@pytest.fixture
def reg(tmp_path) -> ExpertRegistry:
    return ExpertRegistry(tmp_path / "experts")


def test_add_get_and_verify(reg, tmp_path):
    ex = np.random.default_rng(0).normal(size=(5, 384)).astype(np.float32)
    rec = reg.add("python", make_adapter(tmp_path / "a"), ex, {"ppl_base": 10.0, "ppl_expert": 8.0}, "base-id",
                  data_sha256="ab" * 32)
    assert reg.names() == ["python"] and "python" in reg
    assert rec.manifest["base_model"] == "base-id" and rec.manifest["data_sha256"] == "ab" * 32
    assert rec.metrics["ppl_expert"] == 8.0 and rec.exemplar_count == 5
    assert set(rec.manifest["files"]) == {"adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                                          "exemplars.npy"}
    path = reg.adapter_dir("python")
    assert (path / "adapter_model.safetensors").read_bytes() == b"weights"
    np.testing.assert_array_equal(reg.exemplars("python"), ex)
    assert rec.size_bytes > ex.nbytes


def test_existing_name_needs_replace_and_replace_swaps(reg, tmp_path):
    reg.add("law", make_adapter(tmp_path / "a", b"v1"), np.zeros((1, 4)), {}, "b")
    fp1 = reg.get("law").fingerprint
    before = snapshot(reg.root)
    with pytest.raises(DomainExistsError, match="--replace"):
        reg.add("law", make_adapter(tmp_path / "b", b"v2"), np.zeros((1, 4)), {}, "b")
    assert snapshot(reg.root) == before
    reg.add("law", make_adapter(tmp_path / "b", b"v2"), np.zeros((2, 4)), {}, "b", replace=True)
    assert (reg.adapter_dir("law") / "adapter_model.safetensors").read_bytes() == b"v2"
    assert reg.get("law").fingerprint != fp1 and reg.get("law").exemplar_count == 2
    assert [p.name for p in reg.root.iterdir()] == ["law"]  # no leftovers from the swap


@pytest.mark.parametrize("bad", ["", "Python", "has space", "-lead", "trail-", "a/b", "..", ".hidden", "x" * 41])
def test_bad_names_are_refused(reg, tmp_path, bad):
    with pytest.raises(InvalidDomainNameError, match="slug"):
        reg.add(bad, make_adapter(tmp_path / "a"), np.zeros((1, 4)), {}, "b")
    assert snapshot(reg.root) == {}
    assert check_name("tax-law_2") == "tax-law_2"


def test_unknown_domain_is_a_keyerror_with_a_clear_message(reg, tmp_path):
    reg.add("one", make_adapter(tmp_path / "a"), np.zeros((0, 4)), {}, "b")
    with pytest.raises(KeyError) as info:
        reg.get("two")
    assert isinstance(info.value, UnknownDomainError)
    assert str(info.value) == "unknown expert domain 'two' (registered: one)"
    with pytest.raises(UnknownDomainError):
        reg.remove("two")
    assert reg.exemplars("one").shape == (0, 4)


def test_corrupted_or_missing_adapter_file_is_refused_at_load(reg, tmp_path):
    reg.add("med", make_adapter(tmp_path / "a"), np.zeros((1, 4)), {}, "b")
    weights = reg.root / "med" / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(b"weightz")  # same size, different content
    with pytest.raises(CorruptAdapterError, match="sha256 mismatch for adapter/adapter_model.safetensors"):
        reg.adapter_dir("med")
    assert reg.adapter_dir("med", verify=False).is_dir()  # explicit opt-out still finds it
    weights.unlink()
    with pytest.raises(CorruptAdapterError, match="missing"):
        reg.adapter_dir("med")
    (reg.root / "med" / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptAdapterError, match="unreadable"):
        reg.get("med")
    assert reg.records() == []  # a bad domain is skipped when listing, not fatal


def test_names_ignore_hidden_temp_and_incomplete_folders(reg, tmp_path):
    reg.add("ok", make_adapter(tmp_path / "a"), np.zeros((1, 4)), {}, "b")
    (reg.root / ".half.tmp-123").mkdir()
    (reg.root / ".half.tmp-123" / "manifest.json").write_text("{}")
    (reg.root / "nomanifest").mkdir()
    assert reg.names() == ["ok"]
    assert reg.sweep(min_age_s=3600) == []  # too young: could be a register still running
    assert reg.sweep(min_age_s=0) == [".half.tmp-123"]


def test_remove_is_complete(reg, tmp_path):
    reg.add("gone", make_adapter(tmp_path / "a"), np.zeros((1, 4)), {}, "b")
    reg.remove("gone")
    assert reg.names() == [] and list(reg.root.iterdir()) == []


def test_error_inside_add_leaves_old_domain_intact(reg, tmp_path, monkeypatch):
    reg.add("fin", make_adapter(tmp_path / "a", b"old"), np.zeros((1, 4)), {}, "b")
    before = snapshot(reg.root)
    import pet.expert.registry as mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mod.np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        reg.add("fin", make_adapter(tmp_path / "b", b"new"), np.zeros((1, 4)), {}, "b", replace=True)
    assert snapshot(reg.root) == before and reg.names() == ["fin"]
    assert [p.name for p in reg.root.iterdir()] == ["fin"]  # temp folder cleaned up


def test_register_killed_mid_write_leaves_no_half_domain(reg, tmp_path):
    """SIGKILL (no cleanup code runs) while the domain's files are being written."""
    reg.add("old", make_adapter(tmp_path / "a", b"old"), np.zeros((1, 4)), {}, "b")
    before = snapshot(reg.root)
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        import pet.expert.registry as mod
        real_save = np.save
        def save_then_die(*a, **k):
            real_save(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        mod.np.save = save_then_die
        reg = mod.ExpertRegistry({str(reg.root)!r})
        for name, replace in (("new", False),):
            reg.add(name, {str(make_adapter(tmp_path / 'b', b'new'))!r}, np.ones((3, 4)), {{}}, "b", replace=replace)
    """)
    for name in ("new", "old"):
        code = script.replace('(("new", False),)', f'(("{name}", True),)')
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
        assert reg.names() == ["old"]
        assert snapshot(reg.root) == before
        assert (reg.adapter_dir("old") / "adapter_model.safetensors").read_bytes() == b"old"
    leftovers = [p.name for p in reg.root.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 2 and all(".tmp-" in n for n in leftovers)
    # A later register of the same name succeeds despite the debris, and sweep clears it.
    reg.add("new", make_adapter(tmp_path / "c"), np.ones((3, 4)), {}, "b")
    assert reg.names() == ["new", "old"]
    assert len(reg.sweep(min_age_s=0)) == 2


def test_from_config_uses_registry_dir(tmp_path):
    from pet.config.schema import PetConfig

    cfg = PetConfig.model_validate({"expert": {"registry_dir": str(tmp_path / "r")}, "models_dir": str(tmp_path)})
    assert ExpertRegistry.from_config(cfg).root == tmp_path / "r"
    cfg = PetConfig.model_validate({"models_dir": str(tmp_path)})
    assert ExpertRegistry.from_config(cfg).root == tmp_path / "experts"


# ----------------------------------------------------------------------------------------------------------------
# DomainClassifier over the registry


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("method", ["centroid", "knn", "relative"])
def test_classifier_floor_and_hot_reload(reg, tmp_path, method):
    e = np.eye(8, dtype=np.float32)
    reg.add("alpha", make_adapter(tmp_path / "a"), np.stack([_unit(e[0] + 0.1 * e[2]), _unit(e[0] - 0.1 * e[2])]),
            {}, "b")
    clf = DomainClassifier.from_registry(reg, embedder=None, floor=0.5, method=method, k=2)
    assert clf.domains == ["alpha"]
    dom, score = clf.classify_embedding(e[0])
    assert dom == "alpha" and score > 0.9
    dom, score = clf.classify_embedding(e[1])  # orthogonal: out of domain
    assert dom is None and abs(score) < 1e-6
    dom, _ = clf.classify_embedding(_unit(e[0] + e[1]))  # cos ~0.70 >= floor
    assert dom == "alpha"
    # A domain registered later is routed to without rebuilding the classifier.
    reg.add("beta", make_adapter(tmp_path / "b"), e[1:2], {}, "b")
    clf.refresh_s = 0.0
    assert clf.classify_embedding(e[1])[0] == "beta" and clf.domains == ["alpha", "beta"]
    reg.remove("alpha")
    assert clf.classify_embedding(e[0])[0] is None and clf.domains == ["beta"]


def test_classifier_skips_empty_and_corrupt_domains(reg, tmp_path):
    reg.add("empty", make_adapter(tmp_path / "a"), np.zeros((0, 8)), {}, "b")
    reg.add("bad", make_adapter(tmp_path / "b"), np.eye(8)[:1], {}, "b")
    np.save(reg.root / "bad" / "exemplars.npy", np.eye(8)[1:2])  # hash no longer matches
    clf = DomainClassifier.from_registry(reg, floor=0.1)
    assert clf.domains == [] and clf.classify_embedding(np.eye(8)[1]) == (None, 0.0)
    with pytest.raises(RuntimeError, match="no embedder"):
        clf.classify("text")
    with pytest.raises(ValueError, match="method"):
        DomainClassifier({}, method="svm")


def test_classifier_with_text_embedder():
    class Letters:
        """Deterministic bag-of-letters embedder, enough to check the text path."""

        def encode(self, texts):
            out = np.zeros((len(texts), 26), np.float32)
            for i, t in enumerate(texts):
                for ch in t.lower():
                    if "a" <= ch <= "z":
                        out[i, ord(ch) - 97] += 1
            return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    emb = Letters()
    clf = DomainClassifier({"aaa": emb.encode(["aaaa", "aab"]), "zzz": emb.encode(["zzzz", "zzy"])}, emb, floor=0.5)
    assert [d for d, _ in clf.classify_batch(["a a a", "zz", "mmm"])] == ["aaa", "zzz", None]
    assert clf.classify("ab")[0] == "aaa"


def test_relative_method_evens_out_diffuse_domains():
    """A diffuse domain's genuine query scores low in cosine but high relative to the domain's own spread."""
    rng = np.random.default_rng(0)
    tight = np.stack([_unit(np.eye(16)[0] + 0.05 * rng.normal(size=16)) for _ in range(8)])
    diffuse = np.stack([_unit(np.eye(16)[1] + 1.5 * rng.normal(size=16)) for _ in range(8)])
    query = diffuse[0]
    cos = DomainClassifier({"tight": tight, "diffuse": diffuse}, floor=0.6, method="centroid")
    rel = DomainClassifier({"tight": tight, "diffuse": diffuse}, floor=0.6, method="relative")
    assert cos.classify_embedding(query)[0] is None
    assert rel.classify_embedding(query)[0] == "diffuse"
    assert rel.spread[rel.domains.index("diffuse")] < rel.spread[rel.domains.index("tight")]
