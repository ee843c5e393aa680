"""Fair selection and confidence intervals for room measurements (shared by the worlds).

A choice (which rewrite, which rule) is always made on data it is not scored on:
- `seed_crossfit`: per query, the best of several options chosen on one half of the seeds and scored on the
  other (A->B and B->A averaged): e.g. the fair feed-forward bound, the best single rewrite per query.
- `query_crossfit`: one option for all queries, chosen on one half of the queries and scored on the other:
  e.g. the best preview-reading rule.
`bootstrap_ci` resamples queries (the unit of variation) for a percentile interval of a mean.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def select_rules(rules: Sequence[str] | None, available: Mapping[str, T]) -> dict[str, T]:
    """The rules a room measures: `available` restricted to `rules` (None or empty: all of them); ValueError naming
    any unknown name."""
    unknown = sorted(set(rules or ()) - set(available))
    if unknown:
        raise ValueError(f"unknown rule(s) {unknown}; expected some of {sorted(available)}")
    return {k: v for k, v in available.items() if not rules or k in rules}


def check_room_setup(fractions: Sequence[float], seeds: int) -> None:
    """ValueError unless every switch fraction is in (0, 1) and there are the 2 seeds per query cross-fitting needs."""
    if not fractions or not all(0.0 < f < 1.0 for f in fractions):
        raise ValueError(f"switch fractions must be in (0, 1), got {fractions}")
    if seeds < 2:
        raise ValueError("room needs at least 2 seeds per query (chosen on one half, scored on the other)")


def seed_crossfit(scores: np.ndarray) -> np.ndarray:
    """Per-query score of the option chosen on the other half of the seeds. `scores`: (options, queries, seeds)."""
    k, n, s = scores.shape
    if s < 2:
        raise ValueError("seed cross-fitting needs at least 2 seeds per query")
    half = s // 2
    a, b = slice(0, half), slice(half, s)
    idx = np.arange(n)
    best_a = scores[:, :, a].mean(axis=2).argmax(axis=0)
    best_b = scores[:, :, b].mean(axis=2).argmax(axis=0)
    return 0.5 * (scores[best_a, idx][:, b].mean(axis=1) + scores[best_b, idx][:, a].mean(axis=1))


def query_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of query indices 0..n-1 into two halves."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return np.asarray(sorted(order[: n // 2])), np.asarray(sorted(order[n // 2 :]))


def query_crossfit(per_query: Mapping[str, np.ndarray], seed: int) -> tuple[np.ndarray, list[str]]:
    """(per-query score of the option chosen on the other half of the queries, [option chosen on half 1,
    option chosen on half 2]). `per_query`: option name -> per-query mean score, all of one length."""
    names = list(per_query)
    if not names:
        raise ValueError("query cross-fitting needs at least one option")
    n = len(per_query[names[0]])
    h1, h2 = query_halves(n, seed)
    table = np.stack([per_query[k] for k in names])  # (options, queries)
    c1 = int(table[:, h1].mean(axis=1).argmax())
    c2 = int(table[:, h2].mean(axis=1).argmax())
    out = np.empty(n)
    out[h2] = table[c1, h2]  # chosen on half 1, scored on half 2
    out[h1] = table[c2, h1]
    return out, [names[c1], names[c2]]


def _resamples(n: int, seed: int, n_boot: int) -> np.ndarray:
    """`n_boot` bootstrap resamples of `n` queries (indices, one row each), the same for a given seed."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(values: Sequence[float] | np.ndarray, seed: int = 0, n_boot: int = 2000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one value per query), resampling queries."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("bootstrap of no values")
    means = v[_resamples(v.size, seed, n_boot)].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_ratio_ci(numerator: Sequence[float] | np.ndarray, denominator: Sequence[float] | np.ndarray,
                       seed: int = 0, n_boot: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(numerator) / mean(denominator), the two paired per query (the same
    queries resampled in both). A resample whose denominator mean is 0 counts as an infinite ratio of the
    numerator's sign (an interval then reaching +-inf says the denominator's CI crosses 0)."""
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1 or num.size == 0:
        raise ValueError(f"a paired ratio needs two equal, non-empty 1-D arrays, got {num.shape} and {den.shape}")
    idx = _resamples(num.size, seed, n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num[idx].mean(axis=1) / den[idx].mean(axis=1)
    ratios = np.nan_to_num(ratios, nan=0.0, posinf=np.inf, neginf=-np.inf)
    # no interpolation between order statistics (inf - inf would be NaN)
    lo, hi = np.quantile(ratios, [(1 - level) / 2, 1 - (1 - level) / 2], method="inverted_cdf")
    return float(lo), float(hi)


__all__ = ["bootstrap_ci", "bootstrap_ratio_ci", "check_room_setup", "query_crossfit", "query_halves", "seed_crossfit", "select_rules"]
