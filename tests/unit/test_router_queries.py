"""The labelled query set: growing it keeps the old queries (ids, order, halves), so cached answers stay valid."""

from __future__ import annotations

from pet.router.queries import (
    EXTRA_PYTHON_MODULES,
    GENERAL_QA,
    PYTHON_MODULES,
    _documented_functions,
    build_query_set,
    general_queries,
    python_queries,
    split,
)


def test_python_questions_grow_as_a_prefix_past_the_first_pool():
    base = len(_documented_functions(PYTHON_MODULES))
    small, big = python_queries(base - 5), python_queries(base + 40)
    assert [q.id for q in big[:len(small)]] == [q.id for q in small]
    assert len({q.id for q in big}) == len(big) == base + 40
    for q in big[base:]:
        assert any(f" {m}." in q.query for m in EXTRA_PYTHON_MODULES), q.query
    assert all(6 <= len(q.reference.split()) <= 80 for q in big)


def test_general_questions_are_unique_and_a_prefix():
    questions = [q.lower() for q, _ in GENERAL_QA]
    assert len(set(questions)) == len(questions)
    assert [q.id for q in general_queries(10)] == [q.id for q in general_queries()[:10]]


def test_a_bigger_set_contains_the_smaller_one_with_the_same_halves():
    small = build_query_set(20, 20, 10)
    big = build_query_set(40, 30, 20)
    assert {q.id for q in small} <= {q.id for q in big}
    cal_s, test_s = split(small)
    cal_b, test_b = split(big)
    assert {q.id for q in cal_s} <= {q.id for q in cal_b}
    assert {q.id for q in test_s} <= {q.id for q in test_b}
    assert not {q.id for q in cal_b} & {q.id for q in test_b}
