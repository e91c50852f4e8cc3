"""Export + device runtime on the tiny random Llama: parity numbers, greedy equality with torch, KV-cache
consistency, streaming, sampling, chat-template equality with transformers, and no torch on the device."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import TINY_CORPUS

PROMPTS = ["Hello! How are you today?", "What is the capital of France?", "def add(a, b):"]

# SmolLM2-135M-Instruct's template (default system turn), to check the renderer on a non-trivial template.
SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def bundles(tiny_lm_dir, tmp_path_factory):
    """fp32 and int8 bundles of the tiny model, with parity measured on a short prompt and text set."""
    from pet.personal.bundle.write import export_bundle

    root = tmp_path_factory.mktemp("bundles")
    fp32_onnx = None
    out = {}
    for q in ("none", "int8"):
        out[q] = export_bundle(tiny_lm_dir, root / q, quantize=q, parity_prompts=PROMPTS, parity_texts=TINY_CORPUS,
                               from_onnx=fp32_onnx)
        fp32_onnx = out["none"] / "model.onnx"  # the int8 bundle reuses the fp32 export
    return out


@pytest.fixture(scope="module")
def dev(bundles):
    from pet.personal.runtime import DeviceModel

    return DeviceModel.load(bundles["none"])


def test_bundle_manifest_and_parity(bundles):
    for q, path in bundles.items():
        meta = json.loads((path / "bundle.json").read_text())
        assert meta["quantization"] == q and meta["tier"] == "P" and meta["layers"] == 4
        assert set(meta["files"]) >= {"model.onnx", "tokenizer.json", "chat_template.jinja"}
        assert meta["signature"]["alg"] == "Ed25519" and meta["opset"] >= 14  # signed by default
        p = meta["parity"]
        assert p["tokenization_equal"] is True
        assert p["prompts"] == len(PROMPTS) and p["heldout_texts"] == len(TINY_CORPUS)
        assert p["ppl_torch_fp32"] > 1 and abs(p["ppl_ratio"] - 1) < 0.05
    exact = json.loads((bundles["none"] / "bundle.json").read_text())["parity"]
    assert exact["max_logit_diff"] < 1e-3 and exact["greedy_token_agreement"] == 1.0
    from pet.personal.bundle.read import read_bundle

    assert read_bundle(bundles["int8"]).size_bytes < read_bundle(bundles["none"]).size_bytes


def test_greedy_equals_torch(dev, tiny_lm):
    for p in PROMPTS:
        ref = tiny_lm.generate(p, max_new_tokens=12)
        got = dev.generate(p, max_new_tokens=12)
        assert got.token_ids == ref.token_ids
        assert got.text == ref.text and got.finish_reason == ref.finish_reason
        assert got.signals.mean_logprob == pytest.approx(ref.signals.mean_logprob, abs=1e-3)
        assert got.usage.prompt_tokens == ref.usage.prompt_tokens


def test_kv_cache_matches_full_forward(dev):
    ids = dev.encode(dev.render("The capital of Italy is"))
    full = dev.logits(ids)
    logits, past = dev._step(ids[:5], 0, dev._empty_past())
    rows = [logits]
    for i in range(5, len(ids)):
        step, past = dev._step([ids[i]], i, past)
        rows.append(step)
    incremental = np.concatenate(rows)
    assert incremental.shape == full.shape
    np.testing.assert_allclose(incremental, full, atol=1e-4)


def test_stream_sampling_and_stop(dev):
    pieces = list(dev.stream("Hello!", max_new_tokens=10))
    assert "".join(pieces) == dev.generate("Hello!", max_new_tokens=10).text
    a = dev.generate("Hello!", max_new_tokens=8, temperature=1.0, seed=3)
    b = dev.generate("Hello!", max_new_tokens=8, temperature=1.0, seed=3)
    assert a.token_ids == b.token_ids
    # top_p tiny keeps only the most likely token: sampling degenerates to greedy.
    greedy = dev.generate("Hello!", max_new_tokens=8)
    assert dev.generate("Hello!", max_new_tokens=8, temperature=1.0, top_p=1e-6, seed=1).token_ids == greedy.token_ids
    if len(greedy.text) > 2:
        cut = greedy.text[1:3]
        stopped = dev.generate("Hello!", max_new_tokens=8, stop=[cut])
        assert cut not in stopped.text and stopped.finish_reason == "stop"


def test_chat_renderer_equals_transformers(tiny_lm):
    from pet.personal.chat import ChatRenderer

    msgs = [[{"role": "user", "content": "Hi there"}],
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
             {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}]]
    tok = tiny_lm.tokenizer
    for template in (tok.chat_template, SMOL_TEMPLATE):
        r = ChatRenderer(template, {"bos_token": tok.bos_token, "eos_token": tok.eos_token})
        for m in msgs:
            for gen in (True, False):
                ref = tok.apply_chat_template(m, tokenize=False, add_generation_prompt=gen, chat_template=template)
                assert r.render(m, add_generation_prompt=gen) == ref


def test_bad_input_errors(dev):
    from pet.personal.bundle.read import BundleError

    for bad in ("", "   ", []):
        with pytest.raises(BundleError, match="empty"):
            dev.generate(bad)
    with pytest.raises(BundleError, match="role"):
        dev.generate([{"role": "robot", "content": "x"}])
    with pytest.raises(BundleError, match="max_new_tokens"):
        dev.generate("hi", max_new_tokens=0)
    with pytest.raises(BundleError, match="context"):
        dev.generate("hi", max_new_tokens=10_000)
    with pytest.raises(BundleError, match="empty"):
        next(dev.stream(""))


def run_device_without_torch(bundle, runtime: str = "ort") -> str:
    """Load ``bundle`` with ``runtime`` in a fresh interpreter, generate and stream; fail if torch & co. got
    imported. Returns the subprocess's stdout."""
    code = (
        "import sys\n"
        "from pet.personal.runtime import load_model\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'import'\n"
        f"m = load_model({str(bundle)!r}, runtime={runtime!r})\n"
        "g = m.generate('Hello!', max_new_tokens=4)\n"
        "list(m.stream('Hi', max_new_tokens=3))\n"
        "bad = [k for k in ('torch', 'transformers', 'optimum') if k in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok', g.usage.completion_tokens)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_device_imports_no_torch(bundles):
    assert run_device_without_torch(bundles["int8"]).startswith("ok")


def test_profile_ops_reports_matmulnbits(bundles):
    """The per-operator decode profile behind docs/device.md: the int8 bundle's time is in MatMulNBits."""
    from pet.personal.bench import profile_ops

    prof = profile_ops(bundles["int8"], steps=3)
    assert prof["nodes"].get("MatMulNBits", 0) >= 1
    assert all(ms >= 0 for ms in prof["ops"].values()) and prof["top"]


def test_device_bench_keeps_every_bundle(bundles, tmp_path):
    """Two bundles of one model and quantisation are two rows of the side-by-side table, not one overwritten."""
    import shutil

    from pet.personal.bench import run_device_bench

    twin = tmp_path / "twin"
    shutil.copytree(bundles["int8"], twin)
    out = run_device_bench([str(bundles["int8"]), str(twin)], new_tokens=3, repeats=1, log=lambda m: None)
    assert len(out["variants"]) == 2
    assert all(r["decode_tok_s"] > 0 for r in out["variants"].values())


def test_pet_exporter_matches_torch(tmp_path_factory):
    """The compact fused-kernel graph (GroupQueryAttention needs head_dim % 16 == 0: hidden 64, 4 heads)."""
    from pet.personal.bundle.write import export_bundle
    from pet.personal.runtime import DeviceModel
    from tests.conftest import build_tiny_llama

    root = tmp_path_factory.mktemp("petgraph")
    model_dir = build_tiny_llama(root / "model", hidden=64)
    metas = {}
    for q in ("none", "int8"):
        b = export_bundle(model_dir, root / q, quantize=q, exporter="pet", parity_prompts=PROMPTS[:2],
                          parity_texts=TINY_CORPUS)
        metas[q] = json.loads((b / "bundle.json").read_text())
        assert metas[q]["exporter"] == "pet"
    assert metas["none"]["parity"]["max_logit_diff"] < 1e-3
    assert metas["none"]["parity"]["greedy_token_agreement"] == 1.0
    assert abs(metas["int8"]["parity"]["ppl_ratio"] - 1) < 0.05
    dev = DeviceModel.load(root / "none")
    ids = dev.encode(dev.render("The capital of Italy is"))
    full = dev.logits(ids)
    logits, past = dev._step(ids[:4], 0, dev._empty_past())
    rows = [logits]
    for i in range(4, len(ids)):
        step, past = dev._step([ids[i]], i, past)
        rows.append(step)
    np.testing.assert_allclose(np.concatenate(rows), full, atol=1e-4)
