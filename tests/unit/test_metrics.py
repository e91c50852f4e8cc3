"""pet.metrics: ROUGE-L as rouge-score computes it, and the one perplexity over labelled token rows."""

from __future__ import annotations

import math

import pytest

from pet.metrics import output_stats, perplexity, repetition, rouge_1_l, rouge_l, text_perplexity


def test_rouge_l_known_values():
    # LCS "a c d" (3 of 4 tokens each side): precision = recall = F1 = 3/4
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_l("the cat sat", "the cat sat") == pytest.approx(1.0)
    assert rouge_l("", "the cat") == 0.0
    # LCS "the cat" (2): precision 2/3, recall 2/4 -> F1 = 4/7; case and punctuation do not count
    assert rouge_l("The cat, sat!", "the big cat ran") == pytest.approx(4 / 7)


def test_rouge_1_and_output_stats():
    # unigram overlap a, c, d (3 of 4 each side) = LCS here; ROUGE-1 counts order-free matches
    assert rouge_1_l("a b c d", "a c d e") == pytest.approx((0.75, 0.75))
    r1, rl = rouge_1_l("d c b a", "a b c d")
    assert r1 == pytest.approx(1.0) and rl == pytest.approx(0.25)
    assert repetition("ha ha ha ha") == pytest.approx(2 / 3) and repetition("one") == 0.0
    assert repetition("see you soon") == 0.0
    s = output_stats(["", "yes yes yes", "hi there"])
    assert s == pytest.approx({"words": 5 / 3, "repetition": 1 / 6, "empty": 1 / 3})
    assert output_stats([]) == {"words": 0.0, "repetition": 0.0, "empty": 0.0}


def test_perplexity_scores_only_labelled_positions(tiny_lm):
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    ids = tok("def add(a, b): return a + b", add_special_tokens=False)["input_ids"]
    pad = tok.pad_token_id
    full, n_full = perplexity(model, [(ids, ids)], pad)
    tail, n_tail = perplexity(model, [(ids, [-100] * 3 + ids[3:])], pad)
    assert n_full == len(ids) - 1 and n_tail == len(ids) - 3 and full > 1 and tail > 1
    # Padding a short row beside a long one changes nothing.
    batch, _ = perplexity(model, [(ids, ids), (ids[:4], ids[:4])], pad)
    alone = math.exp((math.log(full) * n_full + math.log(perplexity(model, [(ids[:4], ids[:4])], pad)[0]) * 3)
                     / (n_full + 3))
    assert batch == pytest.approx(alone, rel=1e-4)
    assert text_perplexity(model, tok, ["def add(a, b): return a + b"]) == pytest.approx(full, rel=1e-5)
    with pytest.raises(ValueError):
        perplexity(model, [(ids[:1], ids[:1])], pad)
