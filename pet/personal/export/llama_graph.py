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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class _Shape:
    """The numbers of a Llama config the graph needs."""

    n_layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    theta: float
    max_pos: int

    @classmethod
    def of(cls, cfg: dict[str, Any]) -> _Shape:
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        return cls(int(cfg["num_hidden_layers"]), hidden, heads, int(cfg.get("num_key_value_heads") or heads),
                   int(cfg.get("head_dim") or hidden // heads), float(cfg.get("rms_norm_eps", 1e-6)),
                   float(cfg.get("rope_theta", 10000.0)), int(cfg.get("max_position_embeddings", 2048)))


class _Graph:
    """Nodes and initializers being collected; each call returns the name of what it added."""

    def __init__(self) -> None:
        self.inits: list = []
        self.nodes: list = []

    def init(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, ins: list[str], outs: list[str], domain: str = "", **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, ins, outs, name=outs[0] + "_node", domain=domain, **attrs))
        return outs[0]


def _inputs_prologue(g: _Graph, sh: _Shape, embed: np.ndarray) -> str:
    """Rotary caches, the attended lengths GroupQueryAttention takes, and the token embeddings (``h0``)."""
    from onnx import TensorProto

    inv_freq = 1.0 / sh.theta ** (np.arange(0, sh.head_dim, 2, dtype=np.float64) / sh.head_dim)
    angles = np.outer(np.arange(sh.max_pos, dtype=np.float64), inv_freq)
    g.init("cos_cache", np.cos(angles).astype(np.float32))
    g.init("sin_cache", np.sin(angles).astype(np.float32))
    g.init("embed_tokens", embed)
    g.init("axes_1", np.array([1], dtype=np.int64))
    g.init("one_i64", np.array(1, dtype=np.int64))
    # seqlens_k = attended length - 1, total_sequence_length = attended length (batch 1, no padding).
    g.node("ReduceSum", ["attention_mask", "axes_1"], ["mask_len"], keepdims=0)
    g.node("Sub", ["mask_len", "one_i64"], ["seqlens_k_i64"])
    g.node("Cast", ["seqlens_k_i64"], ["seqlens_k"], to=TensorProto.INT32)
    g.node("Shape", ["attention_mask"], ["mask_shape"])
    g.node("Gather", ["mask_shape", "one_i64"], ["total_len_i64"], axis=0)
    g.node("Cast", ["total_len_i64"], ["total_len"], to=TensorProto.INT32)
    return g.node("Gather", ["embed_tokens", "input_ids"], ["h0"], axis=0)


def _decoder_layer(g: _Graph, sh: _Shape, w: dict[str, np.ndarray], i: int, x: str) -> str:
    """Layer ``i``: RMSNorm, fused attention with the KV cache, residual, RMSNorm, SiLU MLP, residual."""
    p, a = f"model.layers.{i}.", f"l{i}_"

    def matmul(inp: str, weight: str, short: str, out: str) -> str:
        return g.node("MatMul", [inp, g.init(a + short, w[p + weight].T)], [a + out])

    n1 = g.node("SimplifiedLayerNormalization", [x, g.init(a + "ln1", w[p + "input_layernorm.weight"])], [a + "n1"],
                axis=-1, epsilon=sh.eps)
    q = matmul(n1, "self_attn.q_proj.weight", "wq", "q")
    k = matmul(n1, "self_attn.k_proj.weight", "wk", "k")
    v = matmul(n1, "self_attn.v_proj.weight", "wv", "v")
    attn = g.node("GroupQueryAttention",
                  [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", "seqlens_k", "total_len",
                   "cos_cache", "sin_cache", "position_ids"],
                  [a + "attn", f"present.{i}.key", f"present.{i}.value"], domain="com.microsoft",
                  num_heads=sh.heads, kv_num_heads=sh.kv_heads, do_rotary=1, rotary_interleaved=0,
                  scale=float(sh.head_dim ** -0.5))
    x = g.node("Add", [x, matmul(attn, "self_attn.o_proj.weight", "wo", "o")], [a + "res1"])
    ln2 = g.init(a + "ln2", w[p + "post_attention_layernorm.weight"])
    n2 = g.node("SimplifiedLayerNormalization", [x, ln2], [a + "n2"], axis=-1, epsilon=sh.eps)
    gate = matmul(n2, "mlp.gate_proj.weight", "wg", "gate")
    up = matmul(n2, "mlp.up_proj.weight", "wu", "up")
    act = g.node("Mul", [gate, g.node("Sigmoid", [gate], [a + "sig"])], [a + "silu"])
    hmul = g.node("Mul", [act, up], [a + "hmul"])
    return g.node("Add", [x, matmul(hmul, "mlp.down_proj.weight", "wd", "down")], [a + "res2"])


def _lm_head(g: _Graph, sh: _Shape, x: str, norm: np.ndarray, head: np.ndarray) -> None:
    """Final RMSNorm and the output projection to ``logits``."""
    nf = g.node("SimplifiedLayerNormalization", [x, g.init("final_norm", norm)], ["final_h"], axis=-1,
                epsilon=sh.eps)
    # ``last_only`` is an input with a default (an overridable initializer): 0 gives every position's logits
    # (perplexity, parity, onnxruntime-genai), 1 only the last one -- a prefill then skips the head's product for
    # the other positions (a fifth of SmolLM2's prefill FLOPs) and never materialises n x vocab logits.
    g.init("last_only", np.array([0], dtype=np.int64))
    g.init("int64_max", np.array([np.iinfo(np.int64).max], dtype=np.int64))
    g.node("Neg", ["last_only"], ["logits_start"])
    nf = g.node("Slice", [nf, "logits_start", "int64_max", "axes_1"], ["final_h_kept"])
    g.node("MatMul", [nf, g.init("lm_head", head.T)], ["logits"])


def _signature(sh: _Shape, vocab: int) -> tuple[list, list]:
    """Graph inputs and outputs: those of optimum's ``text-generation-with-past`` export plus ``last_only``."""
    from onnx import TensorProto, helper

    i64, f32 = TensorProto.INT64, TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", i64, ["batch_size", "total_sequence_length"]),
              helper.make_tensor_value_info("position_ids", i64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("last_only", i64, [1])]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch_size", "logits_length", vocab])]
    for i in range(sh.n_layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kind}", f32, ["batch_size", sh.kv_heads, "past_sequence_length", sh.head_dim]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kind}", f32, ["batch_size", sh.kv_heads, "total_sequence_length", sh.head_dim]))
    return inputs, outputs


def build_llama_onnx(model_dir: str | Path, out_path: str | Path) -> Path:
    """Write ``out_path`` (fp32 ONNX with KV cache) for the Llama checkpoint in ``model_dir``."""
    import onnx
    from onnx import helper

    model_dir, out_path = Path(model_dir), Path(out_path)
    cfg = json.loads((model_dir / "config.json").read_text())
    if not supported(model_dir):
        raise ValueError(f"{model_dir}: only plain Llama checkpoints are supported by the pet exporter")
    sh = _Shape.of(cfg)
    w = _weights(model_dir)
    embed = w["model.embed_tokens.weight"]
    head = w.get("lm_head.weight", embed) if not cfg.get("tie_word_embeddings", False) else embed

    g = _Graph()
    x = _inputs_prologue(g, sh, embed)
    for i in range(sh.n_layers):
        x = _decoder_layer(g, sh, w, i, x)
    _lm_head(g, sh, x, w["model.norm.weight"], head)
    inputs, outputs = _signature(sh, embed.shape[0])
    graph = helper.make_graph(g.nodes, "pet_llama", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("com.microsoft", 1)],
                              producer_name="pet.personal.export.llama_graph")
    model.ir_version = 9
    out_path.parent.mkdir(parents=True, exist_ok=True)
    big = sum(t.ByteSize() for t in g.inits) > 1_800_000_000
    onnx.save(model, str(out_path), save_as_external_data=big,
              location=out_path.name + "_data" if big else None)
    return out_path
