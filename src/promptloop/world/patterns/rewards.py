"""Patterns-world (v2) rewards computed with its analyzer (`world.patterns.analyzer`).

``patterns_alignment`` (the task reward of world v2): the GenEval-like alignment of every world
(`rewards.alignment.AlignmentReward`, same matching and scoring) over this world's facts, `Query.n_items()` in
all: per query object its colour, shape and **pattern** (always asserted: a caption naming none means
solid), its column / row where asserted; one count fact; each relation. Breakdown keys "colour", "shape",
"pattern", "position", "count", "relation" and "full_correct", as in the Shapes world's. Registered lazily by
name (the world's `REWARDS`).
"""

from __future__ import annotations

from promptloop.rewards.alignment import AlignmentReward, best_matching, cached_parser
from promptloop.world.patterns.analyzer import PatternAnalysis, analyze_scenes
from promptloop.world.patterns.grammar import ParseError, parse
from promptloop.world.patterns.scene import Query

PATTERN_FACT_KINDS: tuple[str, ...] = ("colour", "shape", "pattern", "position", "count", "relation")
MAX_MATCH_CANDIDATES = 6  # only the largest detections take part in the matching (all count for the count)


parse_patterns_query = cached_parser(parse, ParseError, "the Patterns world")  # parse, cached


def pattern_facts(query: Query, analysis: PatternAnalysis) -> dict[str, tuple[int, int]]:
    """(satisfied, asserted) fact counts per kind (PATTERN_FACT_KINDS) under the best object matching."""
    dets = sorted(analysis.objects, key=lambda d: -d.area)[:MAX_MATCH_CANDIDATES]
    asserted = dict.fromkeys(PATTERN_FACT_KINDS, 0)
    per_pair = []
    for q in query.objects:
        for kind in ("colour", "shape", "pattern"):
            asserted[kind] += 1
        asserted["position"] += (q.column is not None) + (q.row is not None)
        per_pair.append([{"colour": int(d.colour == q.colour), "shape": int(d.shape == q.shape),
                          "pattern": int(d.pattern == q.pattern),
                          "position": int(q.column is not None and d.cell[0] == q.column)
                          + int(q.row is not None and d.cell[1] == q.row)} for d in dets])
    asserted["relation"] = len(query.relations)
    asserted["count"] = 1
    best = best_matching(per_pair, query.relations, [d.cell for d in dets], ("colour", "shape", "pattern", "position"))
    best["count"] = int(len(analysis.objects) == len(query.objects))
    return {kind: (best[kind], asserted[kind]) for kind in PATTERN_FACT_KINDS}


class PatternsAlignmentReward(AlignmentReward):
    """GenEval-like fraction of a Patterns-world query's facts that the image satisfies."""

    fact_kinds = PATTERN_FACT_KINDS
    parse = staticmethod(parse_patterns_query)
    analyze = staticmethod(analyze_scenes)
    facts = staticmethod(pattern_facts)


def make_patterns_alignment() -> PatternsAlignmentReward:
    """Factory of the Patterns world's alignment reward."""
    return PatternsAlignmentReward()


__all__ = ["PATTERN_FACT_KINDS", "PatternsAlignmentReward", "parse_patterns_query", "pattern_facts"]
