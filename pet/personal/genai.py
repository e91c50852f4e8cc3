"""onnxruntime-genai as a second device runtime, behind the same interface as :class:`DeviceModel`.

    m = GenaiModel.load("models/bundles/smollm2-int8-shared", num_threads=1)
    g = m.generate("Name three colours.", max_new_tokens=32)        # pet.models.signals.Generation

onnxruntime-genai (Microsoft's native generation loop over onnxruntime) runs pet's bundle graph as it is,
through the ``genai_config.json`` that ``pet export`` writes beside ``model.onnx`` (same input/output names,
a preallocated KV buffer shared between past and present for the GroupQueryAttention graph). pet keeps
everything above the forward pass: the tokenizer and chat template, token choice (greedy or temperature +
top-p with pet's own RNG), the confidence signals, stop strings and streaming; genai runs prefill and each
decode step (``append_tokens``) and hands back the last position's logits. The bundle is checked exactly as
for the onnxruntime loop (sha256 of every file, signature). No torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pet.personal.bundle.read import GENAI_CONFIG_FILE, BundleError, read_bundle
from pet.personal.runtime import DeviceInputError, DeviceModel, open_text_side, verify_signature


class GenaiModel(DeviceModel):
    """A bundle run by onnxruntime-genai's generator; generation, signals and errors as :class:`DeviceModel`."""

    runtime = "genai"

    def __init__(self, info: Any, og_model: Any, tokenizer: Any, renderer: Any):
        import onnxruntime_genai as og

        self._init_text_side(info, tokenizer, renderer)
        self.og = og
        self.og_model = og_model
        self.session = None
        self._budget = self.max_context

    @classmethod
    def load(cls, bundle_dir: str | Path, num_threads: int = 1, verify: bool = True,
             public_key: Any | None = None, allow_unsigned: bool = False) -> GenaiModel:
        """Check the bundle like :meth:`DeviceModel.load`, then open it with onnxruntime-genai."""
        try:
            import onnxruntime_genai as og
        except ImportError as err:
            raise BundleError(f"the genai runtime needs the onnxruntime-genai package ({err}); use --runtime ort "
                              f"or pip install --no-deps onnxruntime-genai==0.18.0") from None
        info = read_bundle(bundle_dir, verify=verify)
        if verify:
            verify_signature(info, public_key, allow_unsigned)
        if GENAI_CONFIG_FILE not in info.files:
            raise BundleError(f"bundle {info.path} has no {GENAI_CONFIG_FILE} (exported before onnxruntime-genai "
                              f"support): re-export it, or use --runtime ort")
        config = og.Config(str(info.path))
        # The signed genai_config.json is not rewritten: thread count and memory options are overlaid here.
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": int(num_threads), "inter_op_num_threads": 1,
            "enable_cpu_mem_arena": False}}}}))
        try:
            og_model = og.Model(config)
        except Exception as err:  # genai raises RuntimeError with onnxruntime's message
            raise BundleError(f"onnxruntime-genai cannot load {info.model_path}: {err}") from err
        tokenizer, renderer = open_text_side(info)
        return cls(info, og_model, tokenizer, renderer)

    # ------------------------------------------------------------------------------------------------------------
    # Forward passes (the rest of generation is DeviceModel's)

    def _generator(self, length: int) -> Any:
        params = self.og.GeneratorParams(self.og_model)
        params.set_search_options(max_length=min(self.max_context, max(length, 2)))
        return self.og.Generator(self.og_model, params)

    def generate_ids(self, prompt_ids: Sequence[int], max_new_tokens: int = 64, *args: Any, **kwargs: Any):
        """:meth:`DeviceModel.generate_ids`; the KV buffer is sized to the prompt plus ``max_new_tokens``."""
        self._budget = len(prompt_ids) + max_new_tokens
        return super().generate_ids(prompt_ids, max_new_tokens, *args, **kwargs)

    def _begin(self, prompt_ids: list[int]) -> tuple[np.ndarray, Any]:
        gen = self._generator(max(self._budget, len(prompt_ids) + 1))
        gen.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
        return np.asarray(gen.get_logits()).reshape(-1), gen

    def _advance(self, state: Any, token: int, position: int) -> tuple[np.ndarray, Any]:
        state.append_tokens(np.asarray([token], dtype=np.int32))
        return np.asarray(state.get_logits()).reshape(-1), state

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits ``[len(ids), vocab]`` of one full forward pass."""
        if not ids:
            raise DeviceInputError("no tokens to score")
        gen = self._generator(len(ids) + 1)
        gen.append_tokens(np.asarray(list(ids), dtype=np.int32))
        return np.asarray(gen.get_output("logits"))[0]

    def describe(self) -> dict[str, Any]:
        """Bundle facts for status output, with the runtime's name."""
        return {**super().describe(), "runtime": self.runtime}
