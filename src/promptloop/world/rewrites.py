"""Candidate rewrites of a query: captions that keep every fact of the query and may add some.

Used by the room measurement (`promptloop world room`) as the action set of the feed-forward bound
and of the hindsight oracles. A candidate is the query re-realised with another paraphrase and, at
random, emphasis and extra facts the query leaves open: a size per object, an absolute position per
object, a background. Candidate 0 is always the query itself (the "keep" action).
"""

from __future__ import annotations

import random
from dataclasses import replace

from promptloop.world.grammar import parse, realise
from promptloop.world.scene import BACKGROUNDS, GRID, SIZES, Query

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
