"""The GenEval-like alignment reward every embedded world builds its own from.

A world's alignment reward is `AlignmentReward` with the world's `fact_kinds`, `parse` (caption -> query),
`analyze` (images -> analyses) and `facts` (query, analysis -> (satisfied, asserted) per kind). The query's objects
are matched to detected objects by brute force over all injective assignments (`best_matching`: a query object
may stay unmatched), maximising the number of satisfied facts; ties keep the first assignment found.
``score = satisfied facts / Query.n_items()``; the breakdown holds the fraction of each kind's facts satisfied
over those asserted (a placeholder 1.0 and `RewardOutput.asserted[kind]` False where the query asserts none of
a kind: `RewardOutput.mean_breakdown()` averages over asserted samples only) and "full_correct" (1.0 where
score == 1).

Images: torch (N, 3, H, W) in [0, 1] (or uint8), numpy (N, H, W, 3) float in [0, 1] or uint8, or a list of PIL
images; bad inputs raise `AnalyzerInputError` (a ValueError). Scores are float32 tensors on the input tensor's
device (CPU otherwise).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from promptloop.rewards.registry import RewardOutput
from promptloop.world.geometry import relation_holds
from promptloop.world.imaging import to_image_batch


def cached_parser(parse: Callable[[str], Any], error: type[Exception], world: str = "") -> Callable[[str], Any]:
    """`parse`, cached (4096 queries), raising ValueError "query '...' does not parse[ in `world`]: ..." where it
    raises `error` (a world's grammar error)."""
    where = f" in {world}" if world else ""

    @lru_cache(maxsize=4096)
    def parse_query(query: str) -> Any:
        try:
            return parse(query)
        except error as e:
            raise ValueError(f"query {query!r} does not parse{where}: {e}") from e

    parse_query.__doc__ = f"`{parse.__module__}.parse`, cached; ValueError naming the query when it does not parse."
    return parse_query


def device_of(images: Any) -> torch.device:
    """The device of an image tensor (CPU for numpy arrays and PIL images)."""
    return images.device if isinstance(images, torch.Tensor) else torch.device("cpu")


def check_queries(queries: Any, n_images: int) -> list[str]:
    """The queries as a list of `n_images` strings; ValueError saying what is wrong otherwise."""
    if isinstance(queries, str):
        raise ValueError("queries must be a list of strings (one per image), got a single string")
    try:
        qs = list(queries)
    except TypeError as e:
        raise ValueError(f"queries must be a list of strings, got {type(queries).__name__}") from e
    for i, q in enumerate(qs):
        if not isinstance(q, str):
            raise ValueError(f"query {i} must be a string, got {type(q).__name__}")
    if len(qs) != n_images:
        raise ValueError(f"got {n_images} images but {len(qs)} queries; pass one query per image")
    return qs


def to_tensor(values: Sequence[float] | np.ndarray, device: torch.device | str) -> torch.Tensor:
    """float32 tensor of `values` on `device`."""
    return torch.as_tensor(np.asarray(values, dtype=np.float32), device=device)


def best_matching(per_pair: Sequence[Sequence[dict[str, int]]], relations: Sequence[tuple[int, str, int]],
                  cells: Sequence[tuple[int, int]], kinds: Sequence[str]) -> dict[str, int]:
    """Satisfied facts per kind (`kinds` plus "relation") under the injective assignment of query objects to
    detections (a query object may stay unmatched) that satisfies most facts; ties keep the first found.
    `per_pair[i][j]`: the facts query object i satisfies when matched to detection j."""
    return best_assignment(per_pair, relations, cells, kinds)[0]


def best_assignment(per_pair: Sequence[Sequence[dict[str, int]]], relations: Sequence[tuple[int, str, int]],
                    cells: Sequence[tuple[int, int]], kinds: Sequence[str]
                    ) -> tuple[dict[str, int], tuple[int | None, ...]]:
    """`best_matching`'s satisfied facts and the assignment itself: per query object, its detection's index
    (None where it stays unmatched)."""
    best: dict[str, int] | None = None
    best_assign: tuple[int | None, ...] = ()
    best_total = -1
    slots: list[int | None] = [*range(len(cells)), *([None] * len(per_pair))]
    for assign in dict.fromkeys(itertools.permutations(slots, len(per_pair))):
        sat = dict.fromkeys((*kinds, "relation"), 0)
        for i, j in enumerate(assign):
            if j is not None:
                for kind, v in per_pair[i][j].items():
                    sat[kind] += v
        for a, rel, b in relations:
            ja, jb = assign[a], assign[b]
            if ja is not None and jb is not None and relation_holds(cells[ja], rel, cells[jb]):
                sat["relation"] += 1
        total = sum(sat.values())
        if total > best_total:
            best, best_total, best_assign = sat, total, assign
    assert best is not None
    return best, best_assign


class AlignmentReward:
    """GenEval-like fraction of the query's facts that the image satisfies (see the module docstring).

    Subclasses (one per world) give `fact_kinds`, `parse`, `analyze` and `facts`; `describe` words one analysis
    for people (the app's list of detections)."""

    fact_kinds: tuple[str, ...] = ()

    def __call__(self, images: Any, queries: Sequence[str]) -> RewardOutput:
        batch = to_image_batch(images)
        qs = check_queries(queries, batch.shape[0])
        parsed = [self.parse(q) for q in qs]  # parse first: fail fast before the analysis
        return self.from_analyses(parsed, self.analyze(batch), device_of(images))

    @staticmethod
    def parse(query: str) -> Any:
        """The query of a caption; ValueError naming it when it does not parse."""
        raise NotImplementedError

    @staticmethod
    def analyze(batch: np.ndarray) -> list[Any]:
        """The analyses of (N, H, W, 3) images in [0, 1]."""
        raise NotImplementedError

    @staticmethod
    def facts(query: Any, analysis: Any) -> dict[str, tuple[int, int]]:
        """(satisfied, asserted) fact counts per kind of `fact_kinds` under the best object matching."""
        raise NotImplementedError

    @staticmethod
    def describe(analysis: Any) -> list[str]:
        """One line per detected object (what it is and its cell; none for an analysis without `objects`)."""
        lines = []
        for d in getattr(analysis, "objects", ()):
            words = [str(getattr(d, k)) for k in ("size", "colour", "pattern", "shape") if getattr(d, k, None)]
            lines.append(f"{' '.join(words)} at column {d.cell[0]}, row {d.cell[1]}")
        return lines

    def from_analyses(self, parsed: Sequence[Any], analyses: Sequence[Any],
                      device: torch.device | str = "cpu") -> RewardOutput:
        """The reward of images already analysed (`analyze`) against parsed queries."""
        facts = [self.facts(query, analysis) for query, analysis in zip(parsed, analyses, strict=True)]
        return self.from_facts(parsed, facts, device)

    def from_facts(self, parsed: Sequence[Any], facts: Sequence[dict[str, tuple[int, int]]],
                   device: torch.device | str = "cpu") -> RewardOutput:
        """The reward from each sample's (satisfied, asserted) fact counts per kind (`facts`)."""
        scores: list[float] = []
        frac: dict[str, list[float]] = {k: [] for k in self.fact_kinds}
        mask: dict[str, list[bool]] = {k: [] for k in self.fact_kinds}
        for query, sample_facts in zip(parsed, facts, strict=True):
            n_items = query.n_items()
            n_sat = sum(s for s, _ in sample_facts.values())
            assert sum(t for _, t in sample_facts.values()) == n_items
            scores.append(n_sat / n_items)
            for kind, (s, t) in sample_facts.items():
                frac[kind].append(s / t if t else 1.0)
                mask[kind].append(t > 0)
        score_t = to_tensor(scores, device)
        breakdown = {k: to_tensor(v, device) for k, v in frac.items()}
        breakdown["full_correct"] = (score_t >= 1.0 - 1e-6).float()
        asserted = {k: torch.as_tensor(v, dtype=torch.bool, device=device) for k, v in mask.items()}
        return RewardOutput(score_t, breakdown, asserted)


__all__ = ["AlignmentReward", "best_assignment", "best_matching", "check_queries", "device_of", "to_tensor"]
