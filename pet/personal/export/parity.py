"""Parity of a device bundle against the PyTorch fp32 model it was exported from.

Measured on a fixed prompt set and a held-out text set (see :mod:`pet.personal.distill.data`):
- ``max_logit_diff``: largest |logit difference| over every position of every templated prompt;
- ``greedy_token_agreement``: share of greedy answer positions where both pick the same token (the shorter
  answer is padded, so an early stop counts as disagreement), and ``greedy_exact``: share of identical answers;
- ``ppl_torch_fp32`` vs ``ppl_bundle`` and their ratio (the quality cost of quantisation);
- ``tokenization_equal``: the device tokenizer + chat renderer give the same ids as transformers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _agreement(a: Sequence[int], b: Sequence[int]) -> float:
    n = max(len(a), len(b))
    if n == 0:
        return 1.0
    return sum(1 for i in range(n) if i < len(a) and i < len(b) and a[i] == b[i]) / n


def measure_parity(model_dir: str | Path, bundle_dir: str | Path, prompts: Sequence[str] | None = None,
                   texts: Sequence[str] | None = None, new_tokens: int = 16, max_length: int = 256,
                   log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Compare the bundle in ``bundle_dir`` with the torch model in ``model_dir``; returns the parity dict."""
    import torch

    from pet.metrics import text_perplexity
    from pet.models.lm import CausalLM
    from pet.personal.distill.data import PROMPTS, heldout_texts
    from pet.personal.runtime import DeviceModel

    t0 = time.perf_counter()
    prompts = list(prompts or PROMPTS)
    texts = list(texts) if texts is not None else heldout_texts(16)
    lm = CausalLM.load(model_dir)
    dev = DeviceModel.load(bundle_dir, verify=False)
    max_diff, tok_equal, agree, exact = 0.0, True, [], 0
    for i, p in enumerate(prompts):
        ids = dev.encode(dev.render(p))
        hf_ids = lm.tokenizer(lm.render(p), add_special_tokens=False)["input_ids"]
        tok_equal &= ids == hf_ids
        with torch.inference_mode():
            ref = lm.model(input_ids=torch.tensor([hf_ids])).logits[0].float().numpy()
        got = dev.logits(hf_ids)
        max_diff = max(max_diff, float(np.abs(ref - got).max()))
        a = lm.generate(p, max_new_tokens=new_tokens).token_ids
        b = dev.generate(p, max_new_tokens=new_tokens).token_ids
        agree.append(_agreement(a, b))
        exact += int(a == b)
        log(f"parity prompt {i + 1}/{len(prompts)}: agreement {agree[-1]:.2f}")
    ppl_ref = text_perplexity(lm.model, lm.tokenizer, texts, max_length=max_length)
    ppl_dev = dev.perplexity(texts, max_length=max_length)
    log(f"held-out perplexity: torch fp32 {ppl_ref:.3f}, bundle {ppl_dev:.3f}")
    return {
        "prompts": len(prompts),
        "new_tokens": new_tokens,
        "max_logit_diff": round(max_diff, 6),
        "greedy_token_agreement": round(float(np.mean(agree)), 4),
        "greedy_exact": round(exact / len(prompts), 4),
        "tokenization_equal": bool(tok_equal),
        "heldout_texts": len(texts),
        "heldout_max_tokens": max_length,
        "ppl_torch_fp32": round(ppl_ref, 4),
        "ppl_bundle": round(ppl_dev, 4),
        "ppl_ratio": round(ppl_dev / ppl_ref, 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }
