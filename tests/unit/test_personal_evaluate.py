"""Evaluation of a personalised P on a tiny model: batched generation stops at the end of the turn, the
decoding options of ``personalization.generation`` reach ``generate``, and the scores carry ROUGE-1/ROUGE-L with
length, repetition and empty share."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pet.config.schema.personal import PersonalGenerationConfig, PersonalizationConfig
from pet.personal.personalize.evaluate import evaluate, generate_next, score_generations

HELDOUT = [{"text": f"see you at {i} tonight", "context": [{"role": "user", "content": f"when {i}?"}]}
           for i in range(5)]


@pytest.fixture(scope="module")
def p(tiny_lm_dir):
    from pet.models.lora import load_base

    return load_base(tiny_lm_dir)


@pytest.fixture
def pcfg() -> PersonalizationConfig:
    return PersonalizationConfig(max_seq_len=48, generation=PersonalGenerationConfig(max_new_tokens=6))


def _prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": "hi " * (i + 1)}] for i in range(n)]


def test_batched_generation_equals_one_by_one_and_keeps_padding_side(p):
    model, tok = p
    gen = PersonalGenerationConfig(max_new_tokens=5)
    side = tok.padding_side
    together = generate_next(model, tok, _prompts(4), gen, batch_size=4)
    alone = [generate_next(model, tok, [q], gen, batch_size=1)[0] for q in _prompts(4)]
    assert together == alone and len(together) == 4 and all("\n" not in t for t in together)
    assert tok.padding_side == side


def test_decoding_options_reach_generate(p, monkeypatch):
    model, tok = p
    seen = {}
    real = model.generate

    def spy(**kw):
        seen.update(kw)
        return real(**kw)

    monkeypatch.setattr(model, "generate", spy)
    gen = PersonalGenerationConfig(max_new_tokens=4, min_new_tokens=2, repetition_penalty=1.3,
                                   no_repeat_ngram_size=2)
    generate_next(model, tok, _prompts(2), gen)
    assert (seen["max_new_tokens"], seen["min_new_tokens"], seen["repetition_penalty"],
            seen["no_repeat_ngram_size"], seen["do_sample"]) == (4, 2, 1.3, 2, False)
    from pet.personal.personalize.lora import end_of_turn_id

    assert end_of_turn_id(tok) in seen["eos_token_id"]
    a = generate_next(model, tok, _prompts(2), PersonalGenerationConfig(max_new_tokens=4, do_sample=True, seed=3))
    b = generate_next(model, tok, _prompts(2), PersonalGenerationConfig(max_new_tokens=4, do_sample=True, seed=3))
    assert a == b and seen["do_sample"] is True and seen["top_k"] == 0  # sampling is seeded


def test_no_repeat_ngram_removes_loops(p):
    from pet.metrics import repetition

    model, tok = p
    free = generate_next(model, tok, _prompts(3), PersonalGenerationConfig(max_new_tokens=24))
    blocked = generate_next(model, tok, _prompts(3), PersonalGenerationConfig(max_new_tokens=24,
                                                                             no_repeat_ngram_size=1))
    assert len(blocked) == 3 and sum(map(repetition, blocked)) <= sum(map(repetition, free))


def test_evaluate_reports_rouge_and_output_stats(p, pcfg):
    model, tok = p
    res = evaluate(model, tok, HELDOUT, pcfg, rouge_n=3)
    assert set(res) >= {"ppl", "rouge_1", "rouge_l", "words", "repetition", "empty", "generated"}
    assert res["generated"] == 3 and res["ppl"] > 1 and 0 <= res["rouge_l"] <= res["rouge_1"] <= 1
    assert 0 <= res["empty"] <= 1 and res["words"] <= 6


def test_score_generations_known_values():
    s = score_generations(["a b c d", "", "ha ha ha"], ["a c d e", "x", "ha"])
    assert s["rouge_l"] == pytest.approx((0.75 + 0 + 0.5) / 3) and s["empty"] == pytest.approx(1 / 3)
    assert s["words"] == pytest.approx(7 / 3) and s["repetition"] == pytest.approx(0.5 / 3)


def test_generation_config_validates():
    with pytest.raises(ValidationError):
        PersonalGenerationConfig(max_new_tokens=4, min_new_tokens=5)
    with pytest.raises(ValidationError):
        PersonalGenerationConfig(repetition_penalty=0.5)
    with pytest.raises(ValidationError):
        PersonalizationConfig(generation={"max_new_tokens": 8, "beams": 2})
