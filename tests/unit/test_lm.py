"""The causal-LM interface on a tiny random Llama: prompts, batching, signals, usage, errors."""

from __future__ import annotations

import math

import pytest

from pet.metrics import text_perplexity
from pet.models.lm import render_prompt
from pet.models.signals import ConfidenceSignals, logprobs_and_entropy


def test_chat_template_applied_without_double_bos(tiny_lm):
    text = tiny_lm.render("hi there")
    assert text.startswith("<|im_start|>user\nhi there<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    ids = tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tiny_lm.tokenizer.bos_token_id) == 2  # user + assistant turns, none added on top


def test_generate_reports_signals_and_usage(tiny_lm):
    out = tiny_lm.generate("What is the capital of France?", max_new_tokens=8)
    n_sig = len(out.signals.token_logprobs)
    assert out.usage.completion_tokens == len(out.token_ids) <= 8
    assert n_sig in (len(out.token_ids), len(out.token_ids) + 1)
    assert all(lp <= 0 for lp in out.signals.token_logprobs)
    assert out.signals.min_token_prob == pytest.approx(math.exp(min(out.signals.token_logprobs)))
    assert out.usage.prompt_tokens == tiny_lm.count_tokens("What is the capital of France?")
    assert out.usage.seconds > 0
    assert out.finish_reason in ("stop", "length")


def test_batch_equals_single_greedy(tiny_lm):
    prompts = ["hello", "The capital of Italy is a long question about geography"]
    batch = tiny_lm.generate_batch(prompts, max_new_tokens=6)
    for p, b in zip(prompts, batch, strict=True):
        single = tiny_lm.generate(p, max_new_tokens=6)
        assert single.token_ids == b.token_ids
        assert single.signals.mean_logprob == pytest.approx(b.signals.mean_logprob, abs=1e-4)


def test_sampling_is_seeded(tiny_lm):
    a = tiny_lm.generate("hello", max_new_tokens=8, temperature=1.0, seed=3)
    b = tiny_lm.generate("hello", max_new_tokens=8, temperature=1.0, seed=3)
    assert a.token_ids == b.token_ids


def test_messages_and_bad_messages(tiny_lm):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert "<|im_start|>system\nbe brief" in render_prompt(tiny_lm.tokenizer, msgs)
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        tiny_lm.generate([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="empty"):
        tiny_lm.generate([])
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny_lm.generate("hi", max_new_tokens=0)


def test_signals_helpers():
    import numpy as np

    lp, ent = logprobs_and_entropy(np.zeros(4, dtype=np.float32), 1)
    assert lp == pytest.approx(math.log(0.25)) and ent == pytest.approx(math.log(4))
    s = ConfidenceSignals.from_tokens([-0.1, -2.0], [0.5, 1.5])
    assert s.features() == pytest.approx([-1.05, math.exp(-2.0), 1.0])
    assert ConfidenceSignals.from_tokens([], []).min_token_prob == 1.0


def test_perplexity_and_loglikelihood(tiny_lm):
    ppl = text_perplexity(tiny_lm.model, tiny_lm.tokenizer, ["hello there friend", "def add(a, b)"])
    assert 1.0 < ppl < 10 * len(tiny_lm.tokenizer)
    total, n = tiny_lm.loglikelihood("The capital of France is", " Paris")
    assert n >= 1 and total < 0
