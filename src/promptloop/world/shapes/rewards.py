"""Shapes-world rewards computed with the classical analyzer (`world.shapes.analyzer`).

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

``count``
    ``1 - min(1, |detected - asked| / asked)`` objects (1.0 exactly when the counts agree);
    breakdown "exact" (1.0 where equal).

Both are registered lazily by name (the world's `REWARDS`); the image-only ``proxy`` (`rewards.proxy`) applies
here too. All rewards accept torch (N, 3, H, W) in [0, 1] (or uint8), numpy (N, H, W, 3) float in [0, 1] or
uint8, or a list of PIL images; bad inputs raise `AnalyzerInputError` (a ValueError). Scores are
float32 tensors on the input tensor's device (CPU otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from promptloop.rewards.alignment import (
    AlignmentReward,
    best_matching,
    cached_parser,
    check_queries,
    device_of,
    to_tensor,
)
from promptloop.rewards.registry import RewardOutput
from promptloop.world.imaging import to_image_batch
from promptloop.world.shapes.analyzer import Analysis, DetectedObject, analyze_scenes
from promptloop.world.shapes.grammar import ParseError, parse
from promptloop.world.shapes.scene import Query

FACT_KINDS: tuple[str, ...] = ("colour", "shape", "size", "position", "count", "relation", "background")
MAX_MATCH_CANDIDATES = 8


parse_query = cached_parser(parse, ParseError)  # parse, cached


# ----------------------------------------------------------------------------- alignment


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


class ShapesAlignmentReward(AlignmentReward):
    """GenEval-like fraction of a Shapes-world query's facts that the image satisfies (see the module docstring)."""

    fact_kinds = FACT_KINDS
    parse = staticmethod(parse_query)
    analyze = staticmethod(analyze_scenes)
    facts = staticmethod(alignment_facts)

    @staticmethod
    def describe(analysis: Any) -> list[str]:
        found = [f"{d.size} {d.colour} {d.shape} at column {d.cell[0]}, row {d.cell[1]}" for d in analysis.objects]
        return [*found, f"background {analysis.background}"]


# ----------------------------------------------------------------------------- count


class CountReward:
    """Object-count agreement: 1 - min(1, |detected - asked| / asked)."""

    def __call__(self, images: Any, queries: Sequence[str]) -> RewardOutput:
        batch = to_image_batch(images)
        qs = check_queries(queries, batch.shape[0])
        asked = np.asarray([len(parse_query(q).objects) for q in qs], dtype=np.float64)
        found = np.asarray([len(a.objects) for a in analyze_scenes(batch)], dtype=np.float64)
        device = device_of(images)
        score = 1.0 - np.minimum(1.0, np.abs(found - asked) / asked)
        return RewardOutput(to_tensor(score, device), {"exact": to_tensor(found == asked, device)})


def make_alignment() -> ShapesAlignmentReward:
    """Factory of the GenEval-like alignment reward."""
    return ShapesAlignmentReward()


def make_count() -> CountReward:
    """Factory of the object-count reward."""
    return CountReward()


__all__ = ["FACT_KINDS", "CountReward", "ShapesAlignmentReward", "alignment_facts", "make_alignment", "make_count",
           "parse_query"]
