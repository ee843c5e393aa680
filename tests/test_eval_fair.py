"""Fair selection (cross-fitting over seeds and over queries) and bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from promptloop.world.fair import bootstrap_ci, query_crossfit, query_halves, seed_crossfit


def test_seed_crossfit_scores_each_choice_on_the_other_seeds() -> None:
    # option 1 wins on seeds 0-1, option 0 on seeds 2-3: each half's choice is scored on the other half
    scores = np.array([[[0.0, 0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0, 0.0]]])
    assert seed_crossfit(scores).tolist() == [0.0]
    consistent = np.array([[[0.2, 0.2, 0.2, 0.2]], [[0.9, 0.8, 0.7, 0.6]]])
    assert seed_crossfit(consistent).tolist() == pytest.approx([0.75])
    with pytest.raises(ValueError, match="2 seeds"):
        seed_crossfit(np.zeros((2, 3, 1)))


def test_query_crossfit_chooses_on_one_half_and_scores_the_other() -> None:
    n = 10
    h1, h2 = query_halves(n, 0)
    assert sorted([*h1, *h2]) == list(range(n)) and len(h1) == 5
    good_on_h1 = np.zeros(n)
    good_on_h1[h1] = 1.0
    good_on_h2 = 1.0 - good_on_h1
    values, chosen = query_crossfit({"a": good_on_h1, "b": good_on_h2}, 0)
    assert chosen == ["a", "b"] and values.tolist() == [0.0] * n  # over-fitting to a half scores nothing
    values, chosen = query_crossfit({"a": np.full(n, 0.3), "b": np.full(n, 0.6)}, 0)
    assert chosen == ["b", "b"] and values.mean() == pytest.approx(0.6)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    v = np.random.default_rng(1).normal(0.1, 0.2, 200)
    lo, hi = bootstrap_ci(v, seed=3)
    assert lo < v.mean() < hi and (lo, hi) == bootstrap_ci(v, seed=3)
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_ci([])
