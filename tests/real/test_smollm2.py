"""Real-weight checks on the prepared SmolLM2-135M-Instruct and MiniLM (marked ``real``)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.real


def test_capital_of_france(real_lm):
    out = real_lm.generate("What is the capital of France?", max_new_tokens=24)
    assert "Paris" in out.text
    assert out.finish_reason == "stop"
    assert out.signals.mean_logprob > -2.0


def test_confident_answer_scores_higher_than_noise(real_lm):
    good, n1 = real_lm.loglikelihood("The capital of France is", " Paris")
    bad, n2 = real_lm.loglikelihood("The capital of France is", " Banana")
    assert good / n1 > bad / n2


def test_minilm_embeddings_separate_topics():
    from pet.models.embed import Embedder

    v = Embedder().encode(["How do I sort a list in Python?", "python list sort()", "Bond yields rose today"])
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
