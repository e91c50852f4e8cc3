"""The demo's why-line: a score and its threshold never print equal when they are not."""

from pet.demo import _versus


def test_a_score_just_under_its_threshold_prints_below_it():
    assert _versus(0.83791, "<", 0.83812) == "0.8379 < 0.8381"
    assert _versus(0.897, ">=", 0.838) == "0.897 >= 0.838"
    assert _versus(0.838, ">=", 0.838) == "0.838 >= 0.838"
    assert _versus(0.8382351, "<", 0.8382353) == "0.838235 < 0.838235 (by 2e-07)"
