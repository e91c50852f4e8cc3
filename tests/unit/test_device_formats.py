"""The bundle formats of issue 25 and the second device runtime, on a tiny random Llama (pet graph, hidden 64):
export + parity for every quantisation format, the shared (block-quantised) embedding, onnxruntime-genai giving
the same tokens as pet's own loop, and clear refusals of formats or runtimes the device does not support."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pet.personal.bundle.read import BundleError
from tests.conftest import TINY_CORPUS

PROMPTS = ["Hello! How are you today?", "What is the capital of France?"]
NEW_FORMATS = ("int8-shared", "int8b64-shared", "int4-shared", "int4-hqq", "int4-gptq")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.conftest import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("formats") / "model", hidden=64)


@pytest.fixture(scope="module")
def bundles(model_dir, tmp_path_factory):
    """fp32 and every new format, all from one fp32 export, with parity on a short prompt and text set."""
    from pet.personal.bundle.write import export_bundle

    root = tmp_path_factory.mktemp("format-bundles")
    out = {"none": export_bundle(model_dir, root / "none", quantize="none", exporter="pet", parity_prompts=PROMPTS,
                                 parity_texts=TINY_CORPUS)}
    for q in ("int8", *NEW_FORMATS):
        out[q] = export_bundle(model_dir, root / q, quantize=q, exporter="pet", parity_prompts=PROMPTS,
                               parity_texts=TINY_CORPUS, from_onnx=out["none"] / "model.onnx")
    return out


def _ops(bundle) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph.node}


def test_device_and_exporter_know_the_same_formats():
    from pet.personal.bundle.read import QUANTIZATIONS
    from pet.personal.export.quantize import SPECS

    assert tuple(SPECS) == QUANTIZATIONS


@pytest.mark.parametrize("fmt", NEW_FORMATS)
def test_new_format_export_and_parity(bundles, fmt):
    meta = json.loads((bundles[fmt] / "bundle.json").read_text())
    assert meta["quantization"] == fmt and meta["signature"]["alg"] == "Ed25519"
    assert {"genai_config.json", "model.onnx_data"} <= set(meta["files"])  # weights beside the graph (mapped)
    p = meta["parity"]
    assert p["tokenization_equal"] and abs(p["ppl_ratio"] - 1) < 0.05
    # 8 bits keeps a random tiny model's greedy tokens; at 4 bits its near-ties may flip
    assert p["greedy_token_agreement"] >= (0.75 if fmt.startswith("int8") else 0.0)
    ops = _ops(bundles[fmt])
    assert "MatMulNBits" in ops
    if fmt.endswith("-shared"):
        # the embedding reads the head's quantised table: no fp32 Gather table is left
        assert "GatherBlockQuantized" in ops and "Gather" in ops  # (the mask's shape Gather remains)
        from pet.personal.bundle.read import read_bundle

        assert read_bundle(bundles[fmt]).size_bytes < read_bundle(bundles["int8"]).size_bytes


def test_shared_embedding_reads_the_head_table(bundles):
    """The shared int8 embedding of a token equals the head's int8 row dequantised: the fp32 logits of the
    first position differ from fp32's only by quantisation noise."""
    from pet.personal.runtime import DeviceModel

    ref = DeviceModel.load(bundles["none"])
    got = DeviceModel.load(bundles["int8-shared"])
    ids = ref.encode(ref.render("The capital of Italy is"))
    a, b = ref.logits(ids), got.logits(ids)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


@pytest.mark.parametrize("fmt", ["none", "int8-shared"])
def test_genai_runtime_matches_pet_loop(bundles, fmt):
    from pet.personal.runtime import load_model

    ort_model = load_model(bundles[fmt], runtime="ort")
    genai_model = load_model(bundles[fmt], runtime="genai")
    assert genai_model.describe()["runtime"] == "genai"
    for p in PROMPTS:
        a = ort_model.generate(p, max_new_tokens=10)
        b = genai_model.generate(p, max_new_tokens=10)
        assert a.token_ids == b.token_ids and a.text == b.text
        assert b.signals.mean_logprob == pytest.approx(a.signals.mean_logprob, abs=1e-3)
    ids = ort_model.encode(ort_model.render(PROMPTS[0]))
    np.testing.assert_allclose(genai_model.logits(ids), ort_model.logits(ids), atol=1e-3)
    pieces = list(genai_model.stream(PROMPTS[0], max_new_tokens=6))
    assert "".join(pieces) == genai_model.generate(PROMPTS[0], max_new_tokens=6).text


def test_genai_runtime_imports_no_torch(bundles):
    from tests.unit.test_device_runtime import run_device_without_torch

    assert run_device_without_torch(bundles["int8-shared"], runtime="genai").startswith("ok")


def test_unsupported_format_and_runtime_refused(bundles, tmp_path):
    import shutil

    from pet.personal.bundle.sign import sign_with_default_key
    from pet.personal.bundle.write import write_manifest
    from pet.personal.runtime import load_model

    b = tmp_path / "b"
    shutil.copytree(bundles["int8-shared"], b)
    meta = json.loads((b / "bundle.json").read_text())
    meta["quantization"] = "int3-future"
    write_manifest(b, {**meta, "signature": None})
    sign_with_default_key(b)  # properly signed, but a format this runtime does not know
    with pytest.raises(BundleError, match="'int3-future' is not supported by this device runtime"):
        load_model(b)
    with pytest.raises(BundleError, match="unknown device runtime 'tflite'"):
        load_model(bundles["int8"], runtime="tflite")
    # A bundle from before genai support (no genai_config.json): genai says so, ort still runs it.
    (b / "genai_config.json").unlink()
    meta["quantization"] = "int8-shared"
    write_manifest(b, {**{k: v for k, v in meta.items() if k != "files"}, "signature": None})
    sign_with_default_key(b)
    with pytest.raises(BundleError, match="has no genai_config.json"):
        load_model(b, runtime="genai")
    assert load_model(b, runtime="ort").generate("Hi", max_new_tokens=2).usage.completion_tokens <= 2


def test_bench_measures_both_runtimes(bundles, tmp_path):
    from pet.personal.bench import run_device_bench

    out = run_device_bench([str(bundles["int8-shared"])], new_tokens=3, repeats=1, runtimes=["ort", "genai"],
                           threads=(1, 2), json_out=str(tmp_path / "r.json"), log=lambda m: None)
    rows = list(out["variants"].values())
    assert [r["runtime"] for r in rows] == ["ort", "genai"]
    assert rows[1]["agreement_vs_ort"] == 1.0
    for r in rows:
        assert r["decode_tok_s"] > 0 and r["decode_tok_s_2t"] > 0 and r["peak_rss_mb"] > 0
        assert set(r["ttft_roofline_ratio"]) == set(r["ttft_s"]) and r["gemm_gflops"] > 0
        assert r["torch_imported"] is False
    assert "vector_extensions" in out["machine"] and json.loads((tmp_path / "r.json").read_text())["variants"]


def test_device_ask_with_either_runtime(bundles, capsys):
    from pet.cli.main import main

    answers = []
    for rt in ("ort", "genai"):
        assert main(["device", "ask", "--bundle", str(bundles["int8-shared"]), "--runtime", rt,
                     "--max-new-tokens", "5", "Hello"]) == 0
        answers.append(capsys.readouterr().out)
    assert answers[0] == answers[1]
