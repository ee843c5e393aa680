"""Backdrops-world (v3) rewards, computed with its analyzer (`world.backdrops.analyzer`).

``backdrops_alignment``
    The GenEval-like alignment of the other worlds (`rewards.alignment.AlignmentReward`: the same brute-force
    matching of query objects to detections) over this world's facts, `Query.n_items()` in all: per query object
    its shape, its colour where the query names one, its column / row where asserted; one count fact; each
    relation. A colour the query leaves open is no fact: any colour satisfies it.
``backdrops_legible`` (the world's task reward)
    ``alignment x legibility``, where legibility is the mean, over the query's objects, of the WCAG-contrast
    legibility (`legibility.legibility`) of the detection each is matched to against the backdrop around it
    (0 for an unmatched object). So an object must be there, right, and stand out from whatever backdrop the
    noise chose. Breakdown: alignment's kinds plus "alignment" and "legibility".
``proxy`` and ``count`` of the Shapes world apply here unchanged (image-only / count-only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from promptloop.rewards.alignment import AlignmentReward, best_assignment, cached_parser
from promptloop.rewards.registry import RewardOutput
from promptloop.world.backdrops.analyzer import BackdropAnalysis, analyze_scenes
from promptloop.world.backdrops.grammar import ParseError, parse
from promptloop.world.backdrops.scene import Query

FACT_KINDS: tuple[str, ...] = ("colour", "shape", "position", "count", "relation")
MAX_MATCH_CANDIDATES = 6  # only the largest detections take part in the matching (all count for the count)


parse_backdrops_query = cached_parser(parse, ParseError, "the Backdrops world")  # parse, cached


def matched_facts(query: Query, analysis: BackdropAnalysis) -> tuple[dict[str, tuple[int, int]], list[float]]:
    """((satisfied, asserted) per kind of FACT_KINDS under the best matching, the legibility of each query
    object's matched detection: 0.0 where it stays unmatched)."""
    dets = sorted(analysis.objects, key=lambda d: -d.area)[:MAX_MATCH_CANDIDATES]
    asserted = dict.fromkeys(FACT_KINDS, 0)
    per_pair = []
    for q in query.objects:
        asserted["shape"] += 1
        asserted["colour"] += q.colour is not None
        asserted["position"] += (q.column is not None) + (q.row is not None)
        per_pair.append([{"shape": int(d.shape == q.shape), "colour": int(q.colour is not None and d.colour == q.colour),
                          "position": int(q.column is not None and d.cell[0] == q.column)
                          + int(q.row is not None and d.cell[1] == q.row)} for d in dets])
    asserted["relation"] = len(query.relations)
    asserted["count"] = 1
    best, assign = best_assignment(per_pair, query.relations, [d.cell for d in dets], ("shape", "colour", "position"))
    best["count"] = int(len(analysis.objects) == len(query.objects))
    legible = [dets[j].legibility if j is not None else 0.0 for j in assign]
    return {kind: (best[kind], asserted[kind]) for kind in FACT_KINDS}, legible


class BackdropsAlignmentReward(AlignmentReward):
    """GenEval-like fraction of a Backdrops-world query's facts that the image satisfies."""

    fact_kinds = FACT_KINDS

    @staticmethod
    def parse(query: str) -> Query:
        return parse_backdrops_query(query)

    @staticmethod
    def analyze(batch: np.ndarray) -> list[Any]:
        return analyze_scenes(batch)

    @staticmethod
    def facts(query: Any, analysis: Any) -> dict[str, tuple[int, int]]:
        return matched_facts(query, analysis)[0]


class BackdropsLegibleReward(BackdropsAlignmentReward):
    """alignment x mean legibility of the query's matched objects against their backdrop."""

    def from_analyses(self, parsed: Any, analyses: Any, device: torch.device | str = "cpu") -> RewardOutput:
        matched = [matched_facts(q, a) for q, a in zip(parsed, analyses, strict=True)]  # one matching per sample
        base = self.from_facts(parsed, [facts for facts, _ in matched], device)
        leg = torch.as_tensor(np.asarray([np.mean(legible) for _, legible in matched], dtype=np.float32),
                              device=base.scores.device)
        breakdown = {**base.breakdown, "alignment": base.scores, "legibility": leg}
        asserted = {**base.asserted, "alignment": torch.ones_like(leg, dtype=torch.bool),
                    "legibility": torch.ones_like(leg, dtype=torch.bool)}
        return RewardOutput(base.scores * leg, breakdown, asserted)


def make_backdrops_alignment() -> BackdropsAlignmentReward:
    """Factory of the Backdrops world's alignment reward."""
    return BackdropsAlignmentReward()


def make_backdrops_legible() -> BackdropsLegibleReward:
    """Factory of the Backdrops world's task reward: alignment x legibility."""
    return BackdropsLegibleReward()


__all__ = ["FACT_KINDS", "BackdropsAlignmentReward", "BackdropsLegibleReward", "matched_facts", "parse_backdrops_query"]
