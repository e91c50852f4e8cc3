"""A compact hand-built ONNX graph for Llama-architecture models (``exporter="pet"``).

optimum's traced export of SmolLM2-135M has ~3,100 nodes after onnxruntime's optimisations, most of them
shape arithmetic and mask building repeated per layer; at one token per step those small kernels cost about
as much as the matrix products. This builder writes the same computation with onnxruntime's fused kernels,
~14 nodes per layer: ``SimplifiedLayerNormalization`` (RMSNorm), q/k/v/o and MLP ``MatMul``s (quantised later
to ``MatMulNBits``), ``GroupQueryAttention`` (causal attention with rotary embedding and the KV cache).

Inputs and outputs are those of optimum's ``text-generation-with-past`` export (``input_ids``,
``attention_mask``, ``position_ids``, ``past_key_values.{i}.key|value`` -> ``logits``, ``present.{i}.key|value``),
so the device runtime runs either graph. Weights are read with ``safetensors`` as numpy (no torch). Batch 1
without padding is what the device runs; the parity check against PyTorch guards the equivalence.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OPSET = 17


def supported(model_dir: str | Path) -> bool:
    """True for plain Llama checkpoints (no rope scaling, no biases, SiLU MLP) this builder reproduces."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    # onnxruntime's CPU GroupQueryAttention needs head_size % 16 == 0.
    return (cfg.get("model_type") == "llama" and not cfg.get("rope_scaling") and not cfg.get("attention_bias")
            and not cfg.get("mlp_bias") and cfg.get("hidden_act", "silu") == "silu" and head_dim % 16 == 0)


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out: dict[str, np.ndarray] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update({k: v.astype(np.float32) for k, v in load_file(str(f)).items()})
    if not out:
        raise FileNotFoundError(f"{model_dir} has no safetensors weights")
    return out


def build_llama_onnx(model_dir: str | Path, out_path: str | Path) -> Path:
    """Write ``out_path`` (fp32 ONNX with KV cache) for the Llama checkpoint in ``model_dir``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model_dir, out_path = Path(model_dir), Path(out_path)
    cfg = json.loads((model_dir / "config.json").read_text())
    if not supported(model_dir):
        raise ValueError(f"{model_dir}: only plain Llama checkpoints are supported by the pet exporter")
    n_layers, hidden = int(cfg["num_hidden_layers"]), int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    eps = float(cfg.get("rms_norm_eps", 1e-6))
    theta = float(cfg.get("rope_theta", 10000.0))
    max_pos = int(cfg.get("max_position_embeddings", 2048))
    w = _weights(model_dir)
    embed = w["model.embed_tokens.weight"]
    head = w.get("lm_head.weight", embed) if not cfg.get("tie_word_embeddings", False) else embed

    inits: list = []
    nodes: list = []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op: str, ins: list[str], outs: list[str], domain: str = "", **attrs) -> str:
        nodes.append(helper.make_node(op, ins, outs, name=outs[0] + "_node", domain=domain, **attrs))
        return outs[0]

    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.outer(np.arange(max_pos, dtype=np.float64), inv_freq)
    init("cos_cache", np.cos(angles).astype(np.float32))
    init("sin_cache", np.sin(angles).astype(np.float32))
    init("embed_tokens", embed)
    init("axes_1", np.array([1], dtype=np.int64))
    init("one_i64", np.array(1, dtype=np.int64))

    # seqlens_k = attended length - 1, total_sequence_length = attended length (batch 1, no padding).
    node("ReduceSum", ["attention_mask", "axes_1"], ["mask_len"], keepdims=0)
    node("Sub", ["mask_len", "one_i64"], ["seqlens_k_i64"])
    node("Cast", ["seqlens_k_i64"], ["seqlens_k"], to=TensorProto.INT32)
    node("Shape", ["attention_mask"], ["mask_shape"])
    node("Gather", ["mask_shape", "one_i64"], ["total_len_i64"], axis=0)
    node("Cast", ["total_len_i64"], ["total_len"], to=TensorProto.INT32)

    x = node("Gather", ["embed_tokens", "input_ids"], ["h0"], axis=0)
    for i in range(n_layers):
        p = f"model.layers.{i}."
        a = f"l{i}_"
        ln1 = init(a + "ln1", w[p + "input_layernorm.weight"])
        n1 = node("SimplifiedLayerNormalization", [x, ln1], [a + "n1"], axis=-1, epsilon=eps)
        q = node("MatMul", [n1, init(a + "wq", w[p + "self_attn.q_proj.weight"].T)], [a + "q"])
        k = node("MatMul", [n1, init(a + "wk", w[p + "self_attn.k_proj.weight"].T)], [a + "k"])
        v = node("MatMul", [n1, init(a + "wv", w[p + "self_attn.v_proj.weight"].T)], [a + "v"])
        attn = node("GroupQueryAttention",
                    [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", "seqlens_k", "total_len",
                     "cos_cache", "sin_cache", "position_ids"],
                    [a + "attn", f"present.{i}.key", f"present.{i}.value"], domain="com.microsoft",
                    num_heads=heads, kv_num_heads=kv_heads, do_rotary=1, rotary_interleaved=0,
                    scale=float(head_dim ** -0.5))
        o = node("MatMul", [attn, init(a + "wo", w[p + "self_attn.o_proj.weight"].T)], [a + "o"])
        x = node("Add", [x, o], [a + "res1"])
        ln2 = init(a + "ln2", w[p + "post_attention_layernorm.weight"])
        n2 = node("SimplifiedLayerNormalization", [x, ln2], [a + "n2"], axis=-1, epsilon=eps)
        g = node("MatMul", [n2, init(a + "wg", w[p + "mlp.gate_proj.weight"].T)], [a + "gate"])
        u = node("MatMul", [n2, init(a + "wu", w[p + "mlp.up_proj.weight"].T)], [a + "up"])
        s = node("Sigmoid", [g], [a + "sig"])
        act = node("Mul", [g, s], [a + "silu"])
        hmul = node("Mul", [act, u], [a + "hmul"])
        d = node("MatMul", [hmul, init(a + "wd", w[p + "mlp.down_proj.weight"].T)], [a + "down"])
        x = node("Add", [x, d], [a + "res2"])
    nf = node("SimplifiedLayerNormalization", [x, init("final_norm", w["model.norm.weight"])], ["final_h"],
              axis=-1, epsilon=eps)
    # ``last_only`` is an input with a default (an overridable initializer): 0 gives every position's logits
    # (perplexity, parity, onnxruntime-genai), 1 only the last one -- a prefill then skips the head's product for
    # the other positions (a fifth of SmolLM2's prefill FLOPs) and never materialises n x vocab logits.
    init("last_only", np.array([0], dtype=np.int64))
    init("int64_max", np.array([np.iinfo(np.int64).max], dtype=np.int64))
    node("Neg", ["last_only"], ["logits_start"])
    nf = node("Slice", [nf, "logits_start", "int64_max", "axes_1"], ["final_h_kept"])
    node("MatMul", [nf, init("lm_head", head.T)], ["logits"])

    i64, f32 = TensorProto.INT64, TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", i64, ["batch_size", "total_sequence_length"]),
              helper.make_tensor_value_info("position_ids", i64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("last_only", i64, [1])]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch_size", "logits_length", embed.shape[0]])]
    for i in range(n_layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", f32,
                                                        ["batch_size", kv_heads, "past_sequence_length", head_dim]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", f32,
                                                         ["batch_size", kv_heads, "total_sequence_length", head_dim]))
    graph = helper.make_graph(nodes, "pet_llama", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("com.microsoft", 1)],
                              producer_name="pet.personal.export.llama_graph")
    model.ir_version = 9
    out_path.parent.mkdir(parents=True, exist_ok=True)
    big = sum(t.ByteSize() for t in inits) > 1_800_000_000
    onnx.save(model, str(out_path), save_as_external_data=big,
              location=out_path.name + "_data" if big else None)
    return out_path
