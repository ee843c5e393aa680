"""Fact-keeping edits of Shapes-world captions: the rewrites the world's refinement policy is trained to make.

A rewrite is a NEAR-COPY of the user query — its own words, in order — with a few edits that keep every fact
(`apply_edits`): a colour intensified or repeated ("a bright red circle", "a red, red circle"), a size word added
to an object that has none, an absolute position phrase added (consistent with the relations), a background phrase
added when the query has none. `sample_edits` draws them, conditioned on the preview where it shows something (the
wrong object's colour emphasised, the size / position / background the preview shows added) and random otherwise.
`keeps_query_facts` / `caption_keeps_query` check that a caption still asserts every fact of the query.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from promptloop.world.shapes import grammar
from promptloop.world.shapes.scene import (
    BACKGROUNDS,
    GRID,
    INVERSE_RELATION,
    SIZES,
    ObjectQuery,
    Query,
    Scene,
)


def keeps_query_facts(query: Query, candidate: Query) -> bool:
    """Whether `candidate` asserts every fact of `query`: same objects (matched by colour, which is
    unique per object) with the same shape and every asserted size / column / row, the asserted
    background, and every relation (up to inversion). Extra facts in `candidate` are allowed."""
    if len(candidate.objects) != len(query.objects):
        return False
    by_colour = {o.colour: o for o in candidate.objects}
    for o in query.objects:
        c = by_colour.get(o.colour)
        if c is None or c.shape != o.shape:
            return False
        for attr in ("size", "column", "row"):
            if getattr(o, attr) is not None and getattr(c, attr) != getattr(o, attr):
                return False
    if query.background is not None and candidate.background != query.background:
        return False

    def rels(q: Query) -> set[tuple[str, str, str]]:
        out = set()
        for a, rel, b in q.relations:
            ca, cb = q.objects[a].colour, q.objects[b].colour
            if rel in ("right_of", "below"):
                ca, rel, cb = cb, INVERSE_RELATION[rel], ca
            out.add((ca, rel, cb))
        return out

    return rels(query) <= rels(candidate)


def caption_keeps_query(caption: str, query: Query) -> tuple[bool, bool]:
    """(parses, keeps every fact of `query`) for a caption."""
    try:
        parsed = grammar.parse(caption)
    except grammar.ParseError:
        return False, False
    return True, keeps_query_facts(query, parsed)


# ----------------------------------------------------------------------------- edits


_TOKEN_RE = re.compile(r"\w+|[,:]")
_SHAPE_SET = {w for ws in grammar.SHAPE_WORDS.values() for w in ws}
_SIZE_SET = {w for ws in grammar.SIZE_WORDS.values() for w in ws}
_COLOUR_OF = {w: c for c, ws in grammar.COLOUR_WORDS.items() for w in ws}


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def _join(tokens: list[str]) -> str:
    return re.sub(r" ([,:])", r"\1", " ".join(tokens))


def _fix_articles(text: str) -> str:
    return re.sub(r"\b(a|an) (\w)", lambda m: ("an " if m.group(2) in "aeiou" else "a ") + m.group(2), text)


@dataclass(frozen=True)
class _Phrase:
    """Where an object's first noun phrase ("a [size] colour [size] shape", "a [size] shape in colour")
    sits in a caption's token list."""

    article: int
    colour: int  # index of the (first) colour word
    end: int  # index of the phrase's last word (shape, or colour in "shape in colour")
    colour_first: bool
    has_size: bool
    has_position: bool


def _phrases(tokens: list[str]) -> dict[str, _Phrase]:
    """The first "a/an" noun phrase of each colour (references "the red circle" are skipped)."""
    out: dict[str, _Phrase] = {}
    for i, tok in enumerate(tokens):
        if tok not in ("a", "an"):
            continue
        j, colour, has_size = i + 1, None, False
        while j < len(tokens) and (tokens[j] in _SIZE_SET or tokens[j] in _COLOUR_OF or tokens[j] == ","
                                   or tokens[j] in grammar.INTENSIFIERS):
            if tokens[j] in _COLOUR_OF and colour is None:
                colour = j
            has_size |= tokens[j] in _SIZE_SET
            j += 1
        if j >= len(tokens) or tokens[j] not in _SHAPE_SET:
            continue
        end, colour_first = j, colour is not None
        if colour is None and j + 2 < len(tokens) and tokens[j + 1] == "in" and tokens[j + 2] in _COLOUR_OF:
            colour, end = j + 2, j + 2
        if colour is None:
            continue
        nxt = tokens[end + 1: end + 3]
        has_position = nxt[:1] in (["at"], ["on"], ["in"]) and nxt[1:] == ["the"]
        out.setdefault(_COLOUR_OF[tokens[colour]], _Phrase(i, colour, end, colour_first, has_size, has_position))
    return out


def _position_of(cell: tuple[int, int]) -> tuple[int | None, int | None]:
    c, r = cell
    if (c, r) == (1, 1) or (c != 1 and r != 1):
        return c, r
    return (c, None) if c != 1 else (None, r)


@dataclass
class Edits:
    """Fact-keeping edits of a caption: colours to emphasise (colour -> "repeat" or an intensifier),
    sizes / absolute positions to add to objects that have none, a background to add."""

    emphasis: dict[str, str]
    sizes: dict[str, str]
    positions: dict[str, tuple[int | None, int | None]]
    background: tuple[str, bool] | None = None  # (background word, as a prefix?)

    def __bool__(self) -> bool:
        return bool(self.emphasis or self.sizes or self.positions or self.background)


def apply_edits(text: str, edits: Edits) -> str:
    """`text` with `edits` applied in place: its own words, in order, plus the inserted words."""
    tokens = _tokens(text)
    phrases = _phrases(tokens)
    inserts: list[tuple[int, int, list[str]]] = []  # (index, order at equal index, words)
    for colour, how in edits.emphasis.items():
        ph = phrases.get(colour)
        if ph is None:
            continue
        word = tokens[ph.colour]
        if how == "repeat":  # "a red, red circle"; "a circle in red" takes an intensifier instead
            inserts.append((ph.colour, 1, [word, ","] if ph.colour_first else [grammar.INTENSIFIERS[0]]))
        else:
            inserts.append((ph.colour, 1, [how]))
    for colour, size in edits.sizes.items():
        ph = phrases.get(colour)
        if ph is not None and not ph.has_size:
            inserts.append((ph.article + 1, 0, [size]))
    for colour, (col, row) in edits.positions.items():
        ph = phrases.get(colour)
        if ph is not None and not ph.has_position:
            inserts.append((ph.end + 1, 0, grammar._position_phrase(ObjectQuery(colour, "circle", None, col, row))
                            .split()))
    for index, _, words in sorted(inserts, key=lambda x: (-x[0], -x[1])):
        tokens[index:index] = words
    if edits.background is not None and "background" not in tokens:
        word, prefix = edits.background
        prefix = prefix and tokens[0] in ("a", "an")
        tokens = [word, "background", "with", *tokens] if prefix else [*tokens, "on", "a", word, "background"]
    return _fix_articles(_join(tokens))


def _positionable(query: Query, index: int, cell: tuple[int, int]) -> tuple[int | None, int | None] | None:
    from promptloop.world.shapes.rewrites import _consistent_position

    col, row = _position_of(cell)
    return (col, row) if _consistent_position(query, index, col, row) else None


def sample_edits(query: Query, scene: Scene | None, focus: int | None, err: str, rng: random.Random,
                 rate: float = 0.2) -> Edits:
    """Random edits, conditioned on the preview's error where there is one: the wrong object's colour
    emphasised (and its size added), positions added to the objects of a broken relation or to a missing
    object, the background added; plus random edits at `rate`. Sizes, positions and the background are
    those of `scene` (what the preview shows where it is right), random ones without a scene."""
    edits = Edits({}, {}, {})

    def emphasise(k: int) -> None:
        edits.emphasis[query.objects[k].colour] = rng.choice([*grammar.INTENSIFIERS, "repeat", "repeat"])

    def add_size(k: int) -> None:
        if query.objects[k].size is None:
            edits.sizes[query.objects[k].colour] = rng.choice(
                grammar.SIZE_WORDS[scene.objects[k].size if scene is not None else rng.choice(SIZES)])

    def add_position(k: int) -> None:
        o = query.objects[k]
        if o.column is None and o.row is None:
            cell = scene.objects[k].cell if scene is not None else (rng.randrange(GRID), rng.randrange(GRID))
            pos = _positionable(query, k, cell)
            taken = set(edits.positions.values()) | {(p.column, p.row) for p in query.objects}
            if pos is not None and pos not in taken:
                edits.positions[o.colour] = pos

    if focus is not None and err in ("leak", "colour", "shape", "missing", "size"):
        if rng.random() < 0.85:
            emphasise(focus)
        if err in ("shape", "missing", "leak") and rng.random() < 0.3:
            add_size(focus)
        if err == "missing" and rng.random() < 0.3:
            add_position(focus)
    if err == "relation" and query.relations:
        a, _, b = query.relations[0]
        for k in (a, b):
            if rng.random() < 0.4:
                add_position(k)
        if rng.random() < 0.4:
            emphasise(rng.choice((a, b)))
    for k in range(len(query.objects)):
        if rng.random() < rate:
            emphasise(k)
        if rng.random() < rate * 0.75:
            add_size(k)
        if rng.random() < rate * 0.4:
            add_position(k)
    if query.background is None and rng.random() < rate:
        bg = scene.background if scene is not None else rng.choice(list(BACKGROUNDS))
        edits.background = (rng.choice(grammar.BACKGROUND_WORDS[bg]), rng.random() < 0.3)
    return edits


__all__ = ["Edits", "apply_edits", "caption_keeps_query", "keeps_query_facts", "sample_edits"]
