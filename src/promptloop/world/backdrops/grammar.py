"""Captions and queries of the Backdrops world: Query <-> text, and the backbone's training captions.

The language is small and strict (the parser accepts exactly what `realise` writes, in any mix):

    caption   := phrase (connector phrase){0,2}
    phrase    := ("a" | "an") [colour] shape [position]
    position  := "in the" row col | "in the centre" | "on the" ("left" | "right") | "at the" ("top" | "bottom")
    connector := "," | "and" | ", and" | relation
    relation  := "left of" | "right of" | "above" | "below"      (between the phrases it joins)

`row` is top / middle / bottom and `col` left / centre / right ("in the middle centre" is written "in the
centre"). A colour left out leaves the object's colour open. Nothing in the language names the backdrop: the
world's captions never do, so no prompt can pin it down.
"""

from __future__ import annotations

import random
import re

from promptloop.world.backdrops.scene import COLOURS, GRID, SHAPES, ObjectQuery, Query, Scene
from promptloop.world.geometry import RELATIONS, relation_holds

COLUMN_WORDS: tuple[str, ...] = ("left", "centre", "right")
ROW_WORDS: tuple[str, ...] = ("top", "middle", "bottom")
RELATION_WORDS: dict[str, str] = {"left_of": "left of", "right_of": "right of", "above": "above", "below": "below"}

# Training captions: probabilities of naming each object's colour, a position phrase, a relation between
# consecutive objects (where one holds).
P_COLOUR = 0.6
P_POSITION = 0.3
P_RELATION = 0.6

# Decoy background phrases, appended to a share of training captions, each drawn independently of the scene's
# backdrop: they carry no information about it. A backbone warm-started from world v1's (whose captions named
# black / gray / white backgrounds) keeps those words' pull on the backdrop unless it sees them fail to
# predict it. They are v1's phrases only: the light / dark phrases that gate G1 tests are never trained on.
DECOY_PHRASES: tuple[str, ...] = (
    "on a black background", "on a gray background", "on a grey background", "on a white background",
    "with a black background", "with a white background",
)
P_DECOY = 0.2
# The backdrop phrases no caption is trained on, which a prompt writer might try: gate G1 checks that they are not
# followed, and the room's `--phrases` adds them to the up-front candidates.
LIGHT, DARK = " on a light background", " on a dark background"


class ParseError(ValueError):
    """Text outside the world's caption language."""


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def position_phrase(column: int | None, row: int | None) -> str:
    """The position phrase asserting the given column and / or row ("" when neither)."""
    if column is not None and row is not None:
        if (column, row) == (1, 1):
            return "in the centre"
        return f"in the {ROW_WORDS[row]} {COLUMN_WORDS[column]}"
    if column is not None:
        if column == 1:
            raise ValueError("a centre column alone has no phrase; assert the row too")
        return f"on the {COLUMN_WORDS[column]}"
    if row is not None:
        if row == 1:
            raise ValueError("a middle row alone has no phrase; assert the column too")
        return f"at the {ROW_WORDS[row]}"
    return ""


def noun_phrase(o: ObjectQuery) -> str:
    words = [o.colour, o.shape] if o.colour else [o.shape]
    pos = position_phrase(o.column, o.row)
    return " ".join([_article(words[0]), *words] + ([pos] if pos else []))


def realise(query: Query) -> str:
    """The canonical text of a query: phrases in order, each joined to the next by its relation where the query
    has one between them, else by "and" (last) or "," (first of three)."""
    rel_of = {(a, b): r for a, r, b in query.relations}
    parts = [noun_phrase(query.objects[0])]
    n = len(query.objects)
    for i in range(1, n):
        rel = rel_of.get((i - 1, i))
        if rel is not None:
            parts.append(RELATION_WORDS[rel])
        elif i == n - 1:
            parts.append(", and" if n == 3 and (0, 1) in rel_of else "and")
        else:
            parts.append(",")
        parts.append(noun_phrase(query.objects[i]))
    return " ".join(parts).replace(" ,", ",")


def query_from_scene(scene: Scene, rng: random.Random, p_colour: float = P_COLOUR, p_position: float = P_POSITION,
                     p_relation: float = P_RELATION) -> Query:
    """A random true description of `scene` (its objects in the scene's order)."""
    objs = []
    for o in scene.objects:
        col = row = None
        if rng.random() < p_position:
            kind = rng.choice(("both", "column", "row"))
            if kind in ("both", "column") and not (kind == "column" and o.cell[0] == 1):
                col = o.cell[0]
            if kind in ("both", "row") and not (kind == "row" and o.cell[1] == 1):
                row = o.cell[1]
            if kind == "column" and col is None or kind == "row" and row is None:
                col, row = o.cell
        objs.append(ObjectQuery(o.shape, o.colour if rng.random() < p_colour else None, col, row))
    rels = []
    for i in range(1, len(scene.objects)):
        holding = [r for r in RELATIONS if relation_holds(scene.objects[i - 1].cell, r, scene.objects[i].cell)]
        if holding and rng.random() < p_relation:
            rels.append((i - 1, rng.choice(holding), i))
    return Query(tuple(objs), tuple(rels))


def training_caption(scene: Scene, rng: random.Random) -> str:
    """A training caption of `scene`: each colour named with probability P_COLOUR, and with probability P_DECOY a
    decoy background phrase drawn independently of the backdrop (`strip_decoy` removes it); never the backdrop."""
    caption = realise(query_from_scene(scene, rng))
    if rng.random() < P_DECOY:
        caption = f"{caption} {rng.choice(DECOY_PHRASES)}"
    return caption


def strip_decoy(caption: str) -> str:
    """`caption` without its trailing decoy background phrase, if it has one."""
    for phrase in DECOY_PHRASES:
        if caption.endswith(" " + phrase):
            return caption[: -len(phrase) - 1]
    return caption


_TOKEN = re.compile(r"[a-z]+|,")


def parse(caption: str) -> Query:
    """The Query a caption asserts; raises ParseError on anything outside the language."""
    if not isinstance(caption, str):
        raise ParseError(f"a caption must be a string, got {type(caption).__name__}")
    toks = _TOKEN.findall(caption.lower())
    rest = re.sub(r"[a-z]+|,|\s", "", caption.lower())
    if rest.strip("."):
        raise ParseError(f"unexpected characters {rest!r} in {caption!r}")
    i, objs, rels = 0, [], []

    def take(*words: str) -> bool:
        nonlocal i
        if tuple(toks[i : i + len(words)]) == words:
            i += len(words)
            return True
        return False

    while True:
        if not (take("a") or take("an")):
            raise ParseError(f"expected 'a' or 'an' at word {i + 1} of {caption!r}")
        colour = toks[i] if i < len(toks) and toks[i] in COLOURS else None
        i += colour is not None
        if i >= len(toks) or toks[i] not in SHAPES:
            raise ParseError(f"expected a shape {SHAPES} at word {i + 1} of {caption!r}")
        shape = toks[i]
        i += 1
        col = row = None
        if take("in", "the", "centre"):
            col, row = 1, 1
        elif take("in", "the"):
            if i + 1 >= len(toks) or toks[i] not in ROW_WORDS or toks[i + 1] not in COLUMN_WORDS:
                raise ParseError(f"expected 'in the <row> <column>' at word {i - 1} of {caption!r}")
            row, col = ROW_WORDS.index(toks[i]), COLUMN_WORDS.index(toks[i + 1])
            i += 2
        elif take("on", "the"):
            if i >= len(toks) or toks[i] not in ("left", "right"):
                raise ParseError(f"expected 'on the left' or 'on the right' in {caption!r}")
            col = COLUMN_WORDS.index(toks[i])
            i += 1
        elif take("at", "the"):
            if i >= len(toks) or toks[i] not in ("top", "bottom"):
                raise ParseError(f"expected 'at the top' or 'at the bottom' in {caption!r}")
            row = ROW_WORDS.index(toks[i])
            i += 1
        objs.append(ObjectQuery(shape, colour, col, row))
        if i == len(toks):
            break
        if len(objs) == 3:
            raise ParseError(f"at most 3 objects in {caption!r}")
        for rel, words in RELATION_WORDS.items():
            if take(*words.split()):
                rels.append((len(objs) - 1, rel, len(objs)))
                break
        else:
            if not (take(",", "and") or take(",") or take("and")):
                raise ParseError(f"expected ',', 'and' or a relation at word {i + 1} of {caption!r}")
        if i == len(toks):
            raise ParseError(f"{caption!r} ends after a connector")
    return Query(tuple(objs), tuple(rels))


__all__ = ["COLUMN_WORDS", "DARK", "DECOY_PHRASES", "GRID", "LIGHT", "ParseError", "RELATION_WORDS", "ROW_WORDS", "noun_phrase", "parse",
           "position_phrase", "query_from_scene", "realise", "strip_decoy", "training_caption"]
