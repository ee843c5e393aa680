"""Candidate rewrites of a query: captions that keep every fact of the query and may add some.

Used by the room measurement (`promptloop world room`) as the action set of the feed-forward bound
and of the hindsight oracles. A candidate is the query re-realised with another paraphrase and, at
random, emphasis and extra facts the query leaves open: a size per object, an absolute position per
object, a background. Candidate 0 is always the query itself (the "keep" action).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

from promptloop.world.shapes.analyzer import Analysis, DetectedObject
from promptloop.world.shapes.grammar import parse, realise
from promptloop.world.shapes.scene import BACKGROUNDS, GRID, SIZES, ObjectQuery, Query, relation_holds

_POSITIONS: list[tuple[int | None, int | None]] = [
    (0, None), (2, None), (None, 0), (None, 2), (0, 0), (2, 0), (0, 2), (2, 2), (1, 1)
]


def keeps_query(candidate: Query, query: Query) -> bool:
    """Whether `candidate` asserts every fact of `query` (it may assert more)."""
    cand = {(o.colour, o.shape): o for o in candidate.objects}
    if len(candidate.objects) != len(query.objects):
        return False
    for o in query.objects:
        c = cand.get((o.colour, o.shape))
        if c is None:
            return False
        for attr in ("size", "column", "row"):
            if getattr(o, attr) is not None and getattr(c, attr) != getattr(o, attr):
                return False
    if query.background is not None and candidate.background != query.background:
        return False
    cq, qq = candidate.canonical(), query.canonical()
    colours_c = [o.colour for o in cq.objects]
    colours_q = [o.colour for o in qq.objects]
    rel_c = {(colours_c[a], r, colours_c[b]) for a, r, b in cq.relations}
    rel_q = {(colours_q[a], r, colours_q[b]) for a, r, b in qq.relations}
    return rel_q <= rel_c


def _consistent_position(query: Query, index: int, col: int | None, row: int | None) -> bool:
    """An absolute position must not contradict the query's relations (cells are on a GRID)."""
    for a, rel, b in query.relations:
        if index not in (a, b):
            continue
        sign = 1 if index == a else -1
        if rel in ("left_of", "right_of") and col is not None:
            want_low = (rel == "left_of") == (sign == 1)
            if (want_low and col == GRID - 1) or (not want_low and col == 0):
                return False
        if rel in ("above", "below") and row is not None:
            want_low = (rel == "above") == (sign == 1)
            if (want_low and row == GRID - 1) or (not want_low and row == 0):
                return False
    return True


def candidate_rewrites(query: Query, k: int, rng: random.Random) -> list[str]:
    """`k` distinct captions keeping every fact of `query`; the first is a plain realisation."""
    out = [realise(query, random.Random(0))]
    attempts = 0
    while len(out) < k and attempts < 50 * k:
        attempts += 1
        objs = list(query.objects)
        used_cells: set[tuple[int | None, int | None]] = set()
        for i, o in enumerate(objs):
            if o.size is None and rng.random() < 0.5:
                o = replace(o, size=rng.choice(SIZES))
            if o.column is None and o.row is None and rng.random() < 0.35:
                col, row = rng.choice(_POSITIONS)
                if (col, row) not in used_cells and _consistent_position(query, i, col, row):
                    o = replace(o, column=col, row=row)
                    used_cells.add((col, row))
            objs[i] = o
        bg = query.background or (rng.choice(list(BACKGROUNDS)) if rng.random() < 0.3 else None)
        cand_q = Query(tuple(objs), query.relations, bg)
        text = realise(cand_q, rng, emphasis=rng.choice([0.0, 0.5, 1.0]))
        if text in out:
            continue
        if not keeps_query(parse(text), query):  # defensive: never hand out a rewrite that drops a fact
            continue
        out.append(text)
    return out


def _expressible(o: ObjectQuery, cell: tuple[int, int]) -> tuple[int | None, int | None]:
    """The query object's position pinned to `cell` as far as the grammar can say it (corners, centre, or
    one axis: "at the top", "on the left"), never changing a column or row the query asserts."""
    col = o.column if o.column is not None else cell[0]
    row = o.row if o.row is not None else cell[1]
    if (col, row) in _POSITIONS:
        return col, row
    # a middle-of-a-side cell: say only the other axis ("on the left" for (0, 1))
    if row == 1 and o.row is None and (col, None) in _POSITIONS:
        return col, None
    if col == 1 and o.column is None and (None, row) in _POSITIONS:
        return None, row
    return o.column, o.row


def _assignments(query: Query, dets: list[DetectedObject]) -> list[tuple[int, tuple[int | None, ...]]]:
    """Injective matchings of the query's objects to detections, best first, by (colour + shape) agreements.

    A matching must respect what the query asserts: a matched object's asserted column/row equal its
    detection's cell, and every relation between two matched objects hold between their cells."""
    slots: list[int | None] = [*range(len(dets)), *([None] * len(query.objects))]
    seen: set[tuple[int | None, ...]] = set()
    ranked: list[tuple[int, tuple[int | None, ...]]] = []
    for perm in itertools.permutations(slots, len(query.objects)):
        if perm in seen:
            continue
        seen.add(perm)
        ok, score = True, 0
        for o, j in zip(query.objects, perm, strict=True):
            if j is None:
                continue
            d = dets[j]
            if (o.column is not None and d.cell[0] != o.column) or (o.row is not None and d.cell[1] != o.row):
                ok = False
                break
            score += (d.colour == o.colour) + (d.shape == o.shape)
        for a, rel, b in query.relations:
            if ok and perm[a] is not None and perm[b] is not None:
                ok = relation_holds(dets[perm[a]].cell, rel, dets[perm[b]].cell)
        if ok and any(j is not None for j in perm):
            ranked.append((score, perm))
    ranked.sort(key=lambda sp: -sp[0])  # stable: ties keep enumeration order (deterministic)
    return ranked


def anchored_rewrites(query: Query, preview: Analysis, k: int, rng: random.Random, max_detections: int = 5) -> list[str]:
    """`k` distinct captions that keep every fact of `query` and pin its objects to where a preview shows them.

    What a policy that sees the x0 preview can say and a feed-forward rewriter cannot: the query's
    objects are matched to the preview's detections (the `max_detections` largest; see `_assignments`),
    and a candidate pins each matched object's column and row (where the query leaves them open), and
    at random its size, to its detection, so that the rest of sampling renders the intended object where
    a blob already stands. Candidates come from the best matchings first, with and without sizes and
    emphasis. Candidate 0 is the plain query; fewer than `k` anchored captions are topped up with
    `candidate_rewrites`."""
    out = [realise(query, random.Random(0))]
    dets = sorted(preview.objects, key=lambda d: -d.area)[:max_detections]
    ranked = _assignments(query, dets)
    attempts = 0
    while len(out) < k and ranked and attempts < 20 * k:
        # each matching twice in rank order (sizes and emphasis drawn anew), then matchings at random
        _, perm = ranked[attempts // 2] if attempts < 2 * len(ranked) else rng.choice(ranked)
        attempts += 1
        objs = []
        for o, j in zip(query.objects, perm, strict=True):
            if j is not None:
                d = dets[j]
                col, row = _expressible(o, d.cell)
                o = replace(o, column=col, row=row, size=o.size or (d.size if rng.random() < 0.5 else None))
            objs.append(o)
        text = realise(Query(tuple(objs), query.relations, query.background), rng, emphasis=rng.choice([0.0, 0.0, 0.5]))
        if text in out or not keeps_query(parse(text), query):
            continue
        out.append(text)
    for text in candidate_rewrites(query, 2 * k, rng)[1:]:
        if len(out) >= k:
            break
        if text not in out:
            out.append(text)
    return out
