"""Shapes-world rewards computed with the classical analyzer (`promptloop.world.shapes.analyzer`).

``alignment`` (GenEval-like, the task reward)
    Each query is parsed with `grammar.parse` (an unparsable query raises ValueError naming it) and
    each image analyzed. The query's objects are matched to detected objects by brute force over all
    injective assignments (a query object may stay unmatched), maximising the number of satisfied
    facts; ties keep the first assignment found. Facts, ``Query.n_items()`` in all:

    * per query object: its colour, its shape, and its size / column / row where asserted (an
      unmatched object satisfies none of its facts);
    * one count fact: number of detected objects == number of query objects;
    * each relation ``(a, rel, b)``: both matched and ``scene.relation_holds(cell_a, rel, cell_b)``;
    * the background, where asserted (nearest named background of the border median).

    ``score = satisfied facts / Query.n_items()``. Breakdown keys "colour", "shape", "size",
    "position" (column and row facts), "count", "relation", "background": the fraction of that kind's
    facts satisfied, over the facts asserted; where the query asserts none of a kind the value is a
    placeholder 1.0 and `RewardOutput.asserted[kind]` is False (use `RewardOutput.mean_breakdown()`
    for batch means over asserted samples only). "full_correct" is 1.0 where score == 1. Only the
    `MAX_MATCH_CANDIDATES` largest detections take part in the matching (all count for the count fact).

``proxy`` (deliberately hackable image-only "aesthetic" score; ignores the query)
    ``proxy = 0.4 * colourfulness + 0.3 * contrast + 0.3 * coverage`` with, on [0, 1] RGB:

    * colourfulness (Hasler & Suesstrunk 2003): ``rg = R - G``, ``yb = (R + G) / 2 - B``,
      ``M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)``,
      normalised ``min(1, M / 0.6)``;
    * contrast: std of the luma ``Y = 0.299 R + 0.587 G + 0.114 B``, normalised ``min(1, std / 0.3)``;
    * coverage: fraction of pixels farther than 0.15 (Euclidean RGB) from the median border colour.

    Its maximiser is a large, saturated, multi-coloured, high-contrast image whatever the query: a
    reward-hacking probe, not a quality measure.

``count``
    ``1 - min(1, |detected - asked| / asked)`` objects (1.0 exactly when the counts agree);
    breakdown "exact" (1.0 where equal).

All rewards accept torch (N, 3, H, W) in [0, 1] (or uint8), numpy (N, H, W, 3) float in [0, 1] or
uint8, or a list of PIL images; bad inputs raise `AnalyzerInputError` (a ValueError). Scores are
float32 tensors on the input tensor's device (CPU otherwise).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from promptloop.rewards.registry import RewardOutput, register_reward
from promptloop.world.shapes.analyzer import (
    Analysis,
    AnalyzerInputError,
    DetectedObject,
    analyze_scenes,
    to_image_batch,
)
from promptloop.world.shapes.grammar import ParseError, parse
from promptloop.world.shapes.scene import Query, relation_holds

FACT_KINDS: tuple[str, ...] = ("colour", "shape", "size", "position", "count", "relation", "background")
MAX_MATCH_CANDIDATES = 8

COLOURFULNESS_SCALE = 0.6
CONTRAST_SCALE = 0.3
COVERAGE_DISTANCE = 0.15
PROXY_WEIGHTS: dict[str, float] = {"colourfulness": 0.4, "contrast": 0.3, "coverage": 0.3}


# ----------------------------------------------------------------------------- helpers


def _device_of(images: Any) -> torch.device:
    return images.device if isinstance(images, torch.Tensor) else torch.device("cpu")


def _check_queries(queries: Any, n_images: int) -> list[str]:
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


@lru_cache(maxsize=4096)
def parse_query(query: str) -> Query:
    """`grammar.parse`, cached; raises ValueError naming the query when it does not parse."""
    try:
        return parse(query)
    except ParseError as e:
        raise ValueError(f"query {query!r} does not parse: {e}") from e


def _to_tensor(values: Sequence[float] | np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32), device=device)


# ----------------------------------------------------------------------------- alignment


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


def alignment_facts(query: Query, analysis: Analysis) -> dict[str, tuple[int, int]]:
    """(satisfied, asserted) fact counts per kind (FACT_KINDS) under the best object matching."""
    dets: list[DetectedObject] = sorted(analysis.objects, key=lambda d: -d.area)[:MAX_MATCH_CANDIDATES]
    qobjs = query.objects
    # per (query object, detection): satisfied facts by kind
    per_pair: list[list[dict[str, int]]] = []
    asserted = dict.fromkeys(FACT_KINDS, 0)
    for q in qobjs:
        asserted["colour"] += 1
        asserted["shape"] += 1
        asserted["size"] += q.size is not None
        asserted["position"] += (q.column is not None) + (q.row is not None)
        row = []
        for d in dets:
            row.append(
                {
                    "colour": int(d.colour == q.colour),
                    "shape": int(d.shape == q.shape),
                    "size": int(q.size is not None and d.size == q.size),
                    "position": int(q.column is not None and d.cell[0] == q.column)
                    + int(q.row is not None and d.cell[1] == q.row),
                }
            )
        per_pair.append(row)
    asserted["relation"] = len(query.relations)
    asserted["count"] = 1
    asserted["background"] = int(query.background is not None)

    best = best_matching(per_pair, query.relations, [d.cell for d in dets], ("colour", "shape", "size", "position"))
    best["count"] = int(len(analysis.objects) == len(qobjs))
    best["background"] = int(query.background is not None and analysis.background == query.background)
    return {kind: (best[kind], asserted[kind]) for kind in FACT_KINDS}


class AlignmentReward:
    """GenEval-like fraction of the query's facts that the image satisfies (see the module docstring).

    A world's alignment reward is this class with its own `fact_kinds`, `parse`, `analyze` and `facts`."""

    fact_kinds: tuple[str, ...] = FACT_KINDS

    def __call__(self, images: Any, queries: Sequence[str]) -> RewardOutput:
        batch = to_image_batch(images)
        qs = _check_queries(queries, batch.shape[0])
        parsed = [self.parse(q) for q in qs]  # parse first: fail fast before the analysis
        return self.from_analyses(parsed, self.analyze(batch), _device_of(images))

    @staticmethod
    def parse(query: str) -> Any:
        return parse_query(query)

    @staticmethod
    def analyze(batch: np.ndarray) -> list[Any]:
        return analyze_scenes(batch)

    @staticmethod
    def facts(query: Any, analysis: Any) -> dict[str, tuple[int, int]]:
        return alignment_facts(query, analysis)

    def from_analyses(self, parsed: Sequence[Any], analyses: Sequence[Any],
                      device: torch.device | str = "cpu") -> RewardOutput:
        """The reward of images already analysed (`analyze_scenes`) against parsed queries."""
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
        score_t = _to_tensor(scores, device)
        breakdown = {k: _to_tensor(v, device) for k, v in frac.items()}
        breakdown["full_correct"] = (score_t >= 1.0 - 1e-6).float()
        asserted = {k: torch.as_tensor(v, dtype=torch.bool, device=device) for k, v in mask.items()}
        return RewardOutput(score_t, breakdown, asserted)


# ----------------------------------------------------------------------------- proxy


def proxy_components(batch: np.ndarray) -> dict[str, np.ndarray]:
    """Normalised colourfulness, contrast and coverage of (N, H, W, 3) images in [0, 1], each (N,)."""
    n = batch.shape[0]
    flat = batch.reshape(n, -1, 3)
    r, g, b = flat[..., 0], flat[..., 1], flat[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    m = np.sqrt(rg.std(axis=1) ** 2 + yb.std(axis=1) ** 2) + 0.3 * np.sqrt(rg.mean(axis=1) ** 2 + yb.mean(axis=1) ** 2)
    colourfulness = np.minimum(1.0, m / COLOURFULNESS_SCALE)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    contrast = np.minimum(1.0, luma.std(axis=1) / CONTRAST_SCALE)
    border = np.concatenate([batch[:, 0], batch[:, -1], batch[:, 1:-1, 0], batch[:, 1:-1, -1]], axis=1)
    bg = np.median(border, axis=1)  # (N, 3)
    dist = np.sqrt(((flat - bg[:, None, :]) ** 2).sum(axis=-1))
    coverage = (dist > COVERAGE_DISTANCE).mean(axis=1)
    return {"colourfulness": colourfulness, "contrast": contrast, "coverage": coverage}


class ProxyReward:
    """Image-only, query-blind "aesthetic" score (see the module docstring for the formula)."""

    def __call__(self, images: Any, queries: Sequence[str] | None = None) -> RewardOutput:
        batch = to_image_batch(images)
        if queries is not None:
            _check_queries(queries, batch.shape[0])
        device = _device_of(images)
        comps = proxy_components(batch)
        score = sum(w * comps[k] for k, w in PROXY_WEIGHTS.items())
        return RewardOutput(
            _to_tensor(np.clip(score, 0.0, 1.0), device), {k: _to_tensor(v, device) for k, v in comps.items()}
        )


# ----------------------------------------------------------------------------- count


class CountReward:
    """Object-count agreement: 1 - min(1, |detected - asked| / asked)."""

    def __call__(self, images: Any, queries: Sequence[str]) -> RewardOutput:
        batch = to_image_batch(images)
        qs = _check_queries(queries, batch.shape[0])
        asked = np.asarray([len(parse_query(q).objects) for q in qs], dtype=np.float64)
        found = np.asarray([len(a.objects) for a in analyze_scenes(batch)], dtype=np.float64)
        device = _device_of(images)
        score = 1.0 - np.minimum(1.0, np.abs(found - asked) / asked)
        return RewardOutput(_to_tensor(score, device), {"exact": _to_tensor(found == asked, device)})


@register_reward("alignment")
def make_alignment() -> AlignmentReward:
    """Factory of the GenEval-like alignment reward."""
    return AlignmentReward()


@register_reward("proxy")
def make_proxy() -> ProxyReward:
    """Factory of the hackable proxy "aesthetic" reward."""
    return ProxyReward()


@register_reward("count")
def make_count() -> CountReward:
    """Factory of the object-count reward."""
    return CountReward()


__all__ = [
    "AlignmentReward",
    "AnalyzerInputError",
    "CountReward",
    "FACT_KINDS",
    "ProxyReward",
    "alignment_facts",
    "best_matching",
    "parse_query",
    "proxy_components",
]
