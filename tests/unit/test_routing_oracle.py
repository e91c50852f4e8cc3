"""The budget-limited oracle of pet.router.fit: an upper bound that no router can beat."""

import itertools

import numpy as np

from pet.router.fit import oracle_at_budget


def test_oracle_escalates_largest_gains_within_budget():
    q_p = np.array([0.5, 0.1, 0.4, 0.2, 0.9])
    q_cloud = np.array([0.6, 0.9, 0.4, 0.7, 0.1])  # gains 0.1, 0.8, 0.0, 0.5, -0.8
    share, q = oracle_at_budget(q_p, q_cloud, 0.4)  # 2 of 5 may leave: the 0.8 and 0.5 gains
    assert share == 0.4
    assert np.isclose(q, (0.5 + 0.9 + 0.4 + 0.7 + 0.9) / 5)


def test_oracle_never_escalates_a_loss_and_bounds_every_choice():
    rng = np.random.default_rng(0)
    q_p, q_cloud = rng.random(8), rng.random(8)
    share, q = oracle_at_budget(q_p, q_cloud, 0.5)
    assert share <= 0.5
    best = max(np.where(np.isin(np.arange(8), c), q_cloud, q_p).mean()
               for k in range(5) for c in itertools.combinations(range(8), k))
    assert np.isclose(q, best)
    assert oracle_at_budget(q_p, q_p - 0.1, 1.0) == (0.0, float(q_p.mean()))
