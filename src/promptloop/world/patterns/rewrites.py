"""Rewrites of Patterns-world captions in a copy-and-edit language, and the preview-reading rules of the room.

A rewrite keeps the user's caption word for word and edits its noun phrases: it may add a position phrase
where the caption names none (" on the left", " in the top right"), and emphasise an object's pattern
("a striped red circle" -> "a clearly striped red circle"; a solid one gains "plain"). Every rewrite parses
back to the caption's facts plus the positions added (`grammar.parse`), so the reward can judge it against the
original query.

A *rule* maps (query, the analysis of the sample's x0 preview, rng) to a rewrite. Each rule that reads the
preview has a *blind control*: the same kind of edit with what it reads from the preview replaced by a guess
from the text alone (random cells for objects, random objects to emphasise), so the two differ only by the
information the preview carries.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from promptloop.world.geometry import GRID
from promptloop.world.patterns.analyzer import PatternAnalysis, PatternObject
from promptloop.world.patterns.grammar import (
    _NP_RE,
    PATTERN_EMPHASIS,
    PATTERN_NOUNS,
    PATTERN_WORDS,
    PREFIXES,
    parse,
    position_phrase,
)
from promptloop.world.patterns.scene import ObjectQuery, Query


@dataclass(frozen=True)
class ObjectEdit:
    """What a rewrite changes about one object of the caption (None / False: nothing)."""

    cell: tuple[int, int] | None = None  # add the position of this cell, where the caption names none
    emphasise: bool = False  # emphasise the object's pattern


def expressible_position(cell: tuple[int, int]) -> tuple[int | None, int | None]:
    """The most precise position phrase the grammar has for a cell: both coordinates for corners and the
    centre, the one non-middle coordinate for the others."""
    col, row = cell
    if (col == 1) == (row == 1):
        return col, row
    return (None, row) if col == 1 else (col, None)


def edit_caption(caption: str, edits: Sequence[ObjectEdit]) -> str:
    """The caption with each noun phrase edited as `edits` says (one edit per object, in caption order)."""
    text = " ".join(caption.strip().split())
    lowered = text.lower()
    start = next((len(pre) for pre in PREFIXES if lowered.startswith(pre)), 0)  # as `grammar.parse` reads it
    matches = list(_NP_RE.finditer(lowered, start))
    if len(matches) != len(edits):
        raise ValueError(f"{len(edits)} edits for the {len(matches)} objects of {caption!r}")
    objects = parse(caption).objects
    out, pos = [], 0
    for m, edit, obj in zip(matches, edits, objects, strict=True):
        np_ = text[m.start() : m.end()]
        if edit.emphasise:
            np_ = _emphasise(np_, obj)
        if edit.cell is not None and not m.group("pos"):
            np_ += position_phrase(*expressible_position(edit.cell))
        out.append(text[pos : m.start()] + np_)
        pos = m.end()
    return "".join(out) + text[pos:]


def _emphasise(np_: str, obj: ObjectQuery) -> str:
    words = np_.split(" ")
    lowered = [w.lower().rstrip(",") for w in words]
    if any(w in PATTERN_EMPHASIS for w in lowered) or (obj.pattern != "solid" and ", " in np_):
        return np_  # already emphasised
    adjectives = PATTERN_WORDS[obj.pattern]
    for i, w in enumerate(lowered):
        if w in adjectives:
            if obj.pattern == "solid":
                return np_  # "plain" / "solid" is its own emphasis
            # the emphasised form the backbone's captions use: "a clearly striped red circle"
            return " ".join(["a", "clearly", words[i], *words[1:i], *words[i + 1 :]])
    rest = words[1:]  # after the determiner
    if obj.pattern == "solid":
        return " ".join(["a", "plain", *rest])
    noun = f" with {PATTERN_NOUNS[obj.pattern]}"
    body = " ".join(rest)
    if noun in body:  # "a red circle with stripes" -> "a clearly striped red circle"
        body = body.replace(noun, "", 1)
    return " ".join(["a", "clearly", adjectives[0], body])


# ----------------------------------------------------------------------------- reading the preview


def locate(query: Query, analysis: PatternAnalysis) -> list[PatternObject | None]:
    """The preview object each query object most plausibly is: same colour and shape first, else same colour,
    else same shape; each preview object used once."""
    free = list(analysis.objects)
    found: list[PatternObject | None] = [None] * len(query.objects)
    for test in (lambda q, d: d.colour == q.colour and d.shape == q.shape, lambda q, d: d.colour == q.colour,
                 lambda q, d: d.shape == q.shape):
        for i, q in enumerate(query.objects):
            if found[i] is None:
                hit = next((d for d in free if test(q, d)), None)
                if hit is not None:
                    found[i] = hit
                    free.remove(hit)
    return found


def _random_cells(n: int, rng: random.Random) -> list[tuple[int, int]]:
    return rng.sample([(c, r) for c in range(GRID) for r in range(GRID)], n)


Rule = Callable[[str, Query, PatternAnalysis, random.Random], str]


def rule_anchor(caption: str, query: Query, analysis: PatternAnalysis, rng: random.Random) -> str:
    """Every object gets the position where the preview shows it."""
    return edit_caption(caption, [ObjectEdit(cell=d.cell if d else None) for d in locate(query, analysis)])


def blind_anchor(caption: str, query: Query, analysis: PatternAnalysis, rng: random.Random) -> str:
    """Control of `rule_anchor`: positions guessed without the preview (random distinct cells)."""
    return edit_caption(caption, [ObjectEdit(cell=c) for c in _random_cells(len(query.objects), rng)])


def rule_anchor_emphasis(caption: str, query: Query, analysis: PatternAnalysis, rng: random.Random) -> str:
    """Positions from the preview, and every pattern emphasised."""
    return edit_caption(caption, [ObjectEdit(cell=d.cell if d else None, emphasise=True) for d in locate(query, analysis)])


def blind_anchor_emphasis(caption: str, query: Query, analysis: PatternAnalysis, rng: random.Random) -> str:
    """Control of `rule_anchor_emphasis`: random cells, every pattern emphasised."""
    return edit_caption(caption, [ObjectEdit(cell=c, emphasise=True) for c in _random_cells(len(query.objects), rng)])


def rule_emphasise_wrong(caption: str, query: Query, analysis: PatternAnalysis, rng: random.Random) -> str:
    """Positions from the preview; the pattern emphasised on the objects whose preview pattern is not yet the
    asked one (or that the preview does not show)."""
    found = locate(query, analysis)
    return edit_caption(caption, [ObjectEdit(cell=d.cell if d else None, emphasise=d is None or d.pattern != q.pattern)
                                  for q, d in zip(query.objects, found, strict=True)])


def blind_emphasise_wrong(caption: str, query: Query, analysis: PatternAnalysis, rng: random.Random) -> str:
    """Control of `rule_emphasise_wrong`: as many objects emphasised, picked at random; random cells."""
    found = locate(query, analysis)
    n_wrong = sum(d is None or d.pattern != q.pattern for q, d in zip(query.objects, found, strict=True))
    picked = set(rng.sample(range(len(query.objects)), n_wrong))
    cells = _random_cells(len(query.objects), rng)
    return edit_caption(caption, [ObjectEdit(cell=cells[i], emphasise=i in picked) for i in range(len(query.objects))])


def emphasis_only(caption: str, query: Query, analysis: PatternAnalysis, rng: random.Random) -> str:
    """Every pattern emphasised, nothing read from the preview (a fixed mid-way switch)."""
    return edit_caption(caption, [ObjectEdit(emphasise=True) for _ in query.objects])


# name -> (rule, its blind control or None when the rule reads nothing from the preview)
RULES: dict[str, tuple[Rule, Rule | None]] = {
    "anchor": (rule_anchor, blind_anchor),
    "anchor_emphasis": (rule_anchor_emphasis, blind_anchor_emphasis),
    "emphasise_wrong": (rule_emphasise_wrong, blind_emphasise_wrong),
    "emphasis": (emphasis_only, None),
}


def upfront_candidates(caption: str, query: Query, k: int, rng: random.Random) -> list[str]:
    """`k` faithful rewrites a feed-forward rewriter could write before sampling (candidate 0: the caption):
    every pattern emphasised, one object's pattern emphasised, guessed positions with and without emphasis."""
    n = len(query.objects)
    out = [caption, edit_caption(caption, [ObjectEdit(emphasise=True)] * n)]
    out += [edit_caption(caption, [ObjectEdit(emphasise=i == j) for i in range(n)]) for j in range(n)] if n > 1 else []
    while len(out) < k:
        cells = _random_cells(n, rng)
        out.append(edit_caption(caption, [ObjectEdit(cell=c, emphasise=len(out) % 2 == 0) for c in cells]))
    return out[:k]


__all__ = ["RULES", "ObjectEdit", "Rule", "edit_caption", "expressible_position", "locate", "upfront_candidates"]
