"""Augmenter logic: prompts, candidate cleaning, the filter (real MiniLM), request validation, and the
in-process augment on a tiny T."""

from __future__ import annotations

import pytest

from pet.config.schema.personal import AugmentFilterConfig, PersonalizationConfig
from pet.personal.personalize.augment import (
    AugmentRequestError,
    augment_local,
    build_prompts,
    clean_candidate,
    filter_samples,
    filter_samples_with_stats,
    parse_request,
)

SHARED = [
    "going hiking with my dog this weekend, can't wait",
    "pizza night again lol, pepperoni obviously",
    "my dog keeps stealing socks from the laundry",
]


@pytest.fixture(scope="module")
def embedder():
    from tests.unit.personal_helpers import minilm

    return minilm()


def test_build_prompts_seeded_and_only_shared():
    a = build_prompts(SHARED, 4, seed=1, examples_per_prompt=2)
    assert a == build_prompts(SHARED, 4, seed=1, examples_per_prompt=2)
    assert a != build_prompts(SHARED, 4, seed=2, examples_per_prompt=2)
    assert len(a) == 4
    for p in a:
        assert p[0]["role"] == "system" and p[-1]["role"] == "user"
        shown = [m["content"] for m in p if m["role"] == "assistant"]  # the examples, as T's own earlier turns
        assert len(shown) == 2 and len(set(shown)) == 2 and set(shown) <= set(SHARED)
        assert len(p) == 1 + 2 * 2 + 1
    assert build_prompts([], 0, 0) == []
    with pytest.raises(ValueError, match="no shared samples"):
        build_prompts([], 3, 0)


@pytest.mark.parametrize("raw,clean", [
    ('Sure! Here is a message: "taking the dog out now"', "taking the dog out now"),
    ("Message: lol same\nsecond line", "lol same"),
    ("\n\n- brb getting pizza", "brb getting pizza"),
    ("   ", ""),
])
def test_clean_candidate(raw, clean):
    assert clean_candidate(raw) == clean


def test_filter_drops_each_kind_of_bad_candidate(embedder):
    cands = [
        "my dog loves long walks in the park on sundays",        # kept: on topic, new words
        "My dog loves long walks in the park on Sundays!",        # duplicate after normalisation
        SHARED[1],                                                # verbatim copy
        "so I was going hiking with my dog this weekend again",   # 6-word overlap with a shared sample
        "The quarterly tax filing deadline for corporations",     # off topic
        "x" * 400,                                                # too long
        "",                                                       # empty
    ]
    cfg = AugmentFilterConfig(min_similarity=0.3, max_similarity=0.95, max_ngram=6, max_chars=280)
    kept, stats = filter_samples_with_stats(cands, SHARED, embedder, cfg)
    assert kept == ["my dog loves long walks in the park on sundays"]
    assert stats["duplicate"] == 1 and stats["verbatim"] == 1 and stats["ngram_overlap"] == 1
    assert stats["off_topic"] == 1 and stats["length"] == 1 and stats["empty"] == 1 and stats["kept"] == 1
    assert filter_samples(cands, SHARED, embedder, cfg) == kept


def test_filter_near_copy_and_limit(embedder):
    cfg = AugmentFilterConfig(min_similarity=0.0, max_similarity=0.9, max_ngram=12)
    near = "pizza night again lol, pepperoni obviously!!"  # not an exact copy, but the same sentence
    kept, stats = filter_samples_with_stats([near, "my cat hates the vacuum", "socks everywhere again"],
                                            SHARED, embedder, cfg, limit=1)
    assert near not in kept and len(kept) == 1
    assert stats["verbatim"] + stats["near_copy"] == 1 and stats["over_limit"] == 1


def test_parse_request_errors():
    cfg = PersonalizationConfig(synthetic_max=10, max_shared=3)
    assert parse_request({"shared": [" a ", "b"], "n": 2, "seed": 1}, cfg) == (["a", "b"], 2, 1)
    for bad, msg in [
        ([], "JSON object"), ({"shared": "a"}, "list of strings"), ({"shared": ["  "]}, "no non-empty"),
        ({"shared": ["a"] * 4}, "limit is 3"), ({"shared": ["a"], "n": 11}, r"\[0, 10\]"),
        ({"shared": ["a"], "n": True}, "'n'"), ({"shared": ["a"], "n": 1, "seed": "x"}, "'seed'"),
        ({"shared": ["a"], "extra": 1}, "unknown augment field"),
    ]:
        with pytest.raises(AugmentRequestError, match=msg):
            parse_request(bad, cfg)


def test_augment_local_on_tiny_t(tiny_lm, embedder):
    # A random tiny T writes gibberish: the off-topic floor is lowered so the plumbing is what is tested.
    cfg = PersonalizationConfig(gen_max_new_tokens=8, filter=AugmentFilterConfig(min_similarity=-1.0,
                                                                                max_similarity=0.99))
    calls = []
    out = augment_local({"shared": SHARED, "n": 3, "seed": 0}, tiny_lm, embedder, cfg, progress=calls.append)
    assert set(out) == {"samples", "stats"}
    assert len(out["samples"]) <= 3 and all(isinstance(s, str) and s for s in out["samples"])
    assert out["stats"]["candidates"] >= 6 and sum(calls) == out["stats"]["candidates"]
    assert not set(out["samples"]) & set(SHARED)
    zero = augment_local({"shared": SHARED, "n": 0, "seed": 0}, tiny_lm, embedder, cfg)
    assert zero["samples"] == [] and zero["stats"]["rounds"] == 0
