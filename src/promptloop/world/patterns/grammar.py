"""Caption grammar of the Patterns world: realise a Query as text (with paraphrases) and parse it back.

A noun phrase names an object's colour, shape and pattern ("a striped red circle", "a red circle with
stripes", "a red striped circle"; no pattern word, or "plain"/"solid", means solid), optionally its
position ("... on the left", "... in the top right"), and may emphasise the pattern ("a striped, striped
red circle", "a clearly striped red circle"). Sentences join one to three noun phrases, with at most one
relation ("... left of ..."). `parse(realise(q)) == q` up to `Query.canonical()` (tested), so every
caption, and every rewrite the world's policies write, is checkable.
"""

from __future__ import annotations

import random
import re

from promptloop.world.patterns.scene import (
    GRID,
    INVERSE_RELATION,
    MAX_OBJECTS,
    ObjectQuery,
    Query,
    Scene,
    SpecError,
    relation_holds,
)

COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson"),
    "yellow": ("yellow", "golden"),
    "green": ("green", "emerald"),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue", "azure"),
    "pink": ("pink", "rose"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {"circle": ("circle", "disc"), "square": ("square", "box"),
                                           "triangle": ("triangle",)}
PATTERN_WORDS: dict[str, tuple[str, ...]] = {  # adjectives before the noun
    "solid": ("plain", "solid"),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "spotted"),
    "checkered": ("checkered", "checked"),
}
PATTERN_NOUNS: dict[str, str] = {"striped": "stripes", "dotted": "dots", "checkered": "checks"}  # "... with stripes"
PATTERN_EMPHASIS = ("clearly", "boldly")  # "a clearly striped red circle"
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left_of": ("left of", "to the left of"),
    "right_of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
PREFIXES = ("a picture of ", "there is ", "two shapes: ", "three shapes: ")

_WORD_KIND: dict[str, tuple[str, str]] = {}
for _kind, _table in (("colour", COLOUR_WORDS), ("shape", SHAPE_WORDS), ("pattern", PATTERN_WORDS)):
    for _canon, _words in _table.items():
        for _w in _words:
            _WORD_KIND[_w] = (_kind, _canon)
_NOUN_PATTERN = {noun: canon for canon, noun in PATTERN_NOUNS.items()}
_REL_PHRASE = {w: rel for rel, words in RELATION_WORDS.items() for w in words}


class ParseError(ValueError):
    """A caption that is not a sentence of the world's grammar."""


# ----------------------------------------------------------------------------- realise


def position_phrase(column: int | None, row: int | None) -> str:
    """The position words of an object (with their leading space), "" when none is asserted."""
    if column is None and row is None:
        return ""
    if column is not None and row is not None:
        if (column, row) == (1, 1):
            return " in the centre"
        if column == 1 or row == 1:
            raise SpecError("a position with both column and row must be a corner or the centre")
        return f" in the {('top', '', 'bottom')[row]} {('left', '', 'right')[column]}"
    if column is not None:
        if column == 1:
            raise SpecError("the centre column alone cannot be named")
        return f" on the {('left', '', 'right')[column]}"
    assert row is not None
    if row == 1:
        raise SpecError("the middle row alone cannot be named")
    return f" at the {('top', '', 'bottom')[row]}"


def noun_phrase(o: ObjectQuery, rng: random.Random, emphasis: float = 0.0, p_plain: float = 0.3) -> str:
    """One realisation of an object; `emphasis`: probability of emphasising its pattern."""
    colour = rng.choice(COLOUR_WORDS[o.colour])
    shape = rng.choice(SHAPE_WORDS[o.shape])
    if o.pattern == "solid":
        words = f"{rng.choice(PATTERN_WORDS['solid'])} {colour} {shape}" if rng.random() < p_plain else f"{colour} {shape}"
    else:
        adj = rng.choice(PATTERN_WORDS[o.pattern])
        if rng.random() < emphasis:
            adj = rng.choice([f"{adj}, {adj}", f"{rng.choice(PATTERN_EMPHASIS)} {adj}"])
            words = f"{adj} {colour} {shape}"
        else:
            form = rng.random()
            if form < 0.6:
                words = f"{adj} {colour} {shape}"
            elif form < 0.8:
                words = f"{colour} {adj} {shape}"
            else:
                words = f"{colour} {shape} with {PATTERN_NOUNS[o.pattern]}"
    det = "an" if words[0] in "aeiou" else "a"
    return f"{det} {words}{position_phrase(o.column, o.row)}"


def realise(query: Query, rng: random.Random | None = None, emphasis: float = 0.0) -> str:
    """Turn a Query into one of its captions, chosen by `rng` (seeded; default: a fixed one)."""
    rng = rng or random.Random(0)
    objs, rels = list(query.objects), list(query.relations)
    if not 1 <= len(objs) <= MAX_OBJECTS:
        raise SpecError(f"a query names 1 to {MAX_OBJECTS} objects, got {len(objs)}")
    if len(rels) > 1:
        raise SpecError("the grammar expresses at most one relation")
    nps = [noun_phrase(o, rng, emphasis) for o in objs]
    n = len(objs)
    if rels:
        a, rel, b = rels[0]
        if rng.random() < 0.5:
            a, rel, b = b, INVERSE_RELATION[rel], a
        body = f"{nps[a]} {rng.choice(RELATION_WORDS[rel])} {nps[b]}"
        rest = [nps[i] for i in range(n) if i not in (a, b)]
        return body + "".join(f", and {r}" for r in rest)
    order = list(range(n))
    rng.shuffle(order)
    listed = [nps[i] for i in order]
    if n == 1:
        return rng.choice(["{0}", "a picture of {0}", "there is {0}"]).format(*listed)
    body = listed[0] if n == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
    if rng.random() < 0.2:
        body = ("two shapes: " if n == 2 else "three shapes: ") + body
    return body


def _position_of(cell: tuple[int, int], rng: random.Random) -> tuple[int | None, int | None]:
    """A position assertion true of `cell`: column, row or both, as the grammar can say them."""
    col, row = cell
    options: list[tuple[int | None, int | None]] = []
    if col != 1:
        options.append((col, None))
    if row != 1:
        options.append((None, row))
    if (col == 1) == (row == 1):  # a corner, or the centre
        options.append((col, row))
    return rng.choice(options)


def caption_scene(scene: Scene, rng: random.Random, emphasis: float = 0.0, p_position: float = 0.15,
                  p_relation: float = 0.3) -> tuple[str, Query]:
    """A random true caption of `scene` and the Query it asserts."""
    objs = []
    for o in scene.objects:
        column, row = _position_of(o.cell, rng) if rng.random() < p_position else (None, None)
        objs.append(ObjectQuery(o.colour, o.shape, o.pattern, column, row))
    rels: tuple[tuple[int, str, int], ...] = ()
    if len(objs) >= 2 and rng.random() < p_relation:
        a, b = rng.sample(range(len(objs)), 2)
        holding = [r for r in ("left_of", "right_of", "above", "below")
                   if relation_holds(scene.objects[a].cell, r, scene.objects[b].cell)]
        if holding:
            rels = ((a, rng.choice(holding), b),)
    query = Query(tuple(objs), rels)
    return realise(query, rng, emphasis), query


# ----------------------------------------------------------------------------- parse

_SHAPE_ALT = "|".join(w for ws in SHAPE_WORDS.values() for w in ws)
_POS_ALT = r" in the (?:top|bottom) (?:left|right)| in the centre| on the (?:left|right)| at the (?:top|bottom)"
_NP_RE = re.compile(rf"an? (?P<pre>(?:[a-z]+,? )*?)(?P<shape>{_SHAPE_ALT})(?: with (?P<with>stripes|dots|checks))?"
                    rf"(?P<pos>{_POS_ALT})?(?=$|,| )")
_REL_ALT = "|".join(sorted(map(re.escape, _REL_PHRASE), key=len, reverse=True))
_GAP_RE = re.compile(rf"^(?:, and |, | and | (?P<rel>{_REL_ALT}) )$")


def _parse_position(text: str | None) -> tuple[int | None, int | None]:
    if not text:
        return None, None
    words = text.split()
    cols = {"left": 0, "right": 2}
    rows = {"top": 0, "bottom": 2}
    if words[-1] == "centre":
        return 1, 1
    if words[1] == "the" and words[0] == "in":  # in the top left
        return cols[words[3]], rows[words[2]]
    if words[0] == "on":
        return cols[words[2]], None
    return None, rows[words[2]]


def _parse_np(m: re.Match[str], caption: str) -> ObjectQuery:
    colour, pattern = None, None
    emphasised = False
    for raw in m.group("pre").split():
        w = raw.rstrip(",")
        if w in PATTERN_EMPHASIS:
            emphasised = True
            continue
        kind, canon = _WORD_KIND.get(w, ("", ""))
        if kind == "colour" and colour is None:
            colour = canon
        elif kind == "pattern" and (pattern is None or pattern == canon):
            pattern = canon
        else:
            raise ParseError(f"unexpected word {w!r} in {m.group(0)!r} of {caption!r}")
    if colour is None:
        raise ParseError(f"no colour in {m.group(0)!r} of {caption!r}")
    if m.group("with"):
        if pattern is not None:
            raise ParseError(f"two pattern descriptions in {m.group(0)!r} of {caption!r}")
        pattern = _NOUN_PATTERN[m.group("with")]
    if emphasised and pattern in (None, "solid"):
        raise ParseError(f"an emphasis word without a pattern in {m.group(0)!r} of {caption!r}")
    column, row = _parse_position(m.group("pos"))
    return ObjectQuery(colour, _WORD_KIND[m.group("shape")][1], pattern or "solid", column, row)


def parse(caption: str) -> Query:
    """The facts a caption asserts; ParseError when it is not a sentence of this grammar."""
    text = " ".join(caption.lower().strip().rstrip(".").split())
    for prefix in PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    objs: list[ObjectQuery] = []
    rels: list[tuple[int, str, int]] = []
    pos = 0
    for m in _NP_RE.finditer(text):
        gap = text[pos : m.start()]
        if objs:
            g = _GAP_RE.match(gap)
            if g is None:
                raise ParseError(f"cannot read {gap!r} between objects in {caption!r}")
            if g.group("rel"):
                if rels:
                    raise ParseError(f"more than one relation in {caption!r}")
                rels.append((len(objs) - 1, _REL_PHRASE[g.group("rel")], len(objs)))
        elif gap:
            raise ParseError(f"cannot read {gap!r} in {caption!r}")
        objs.append(_parse_np(m, caption))
        pos = m.end()
    if not objs or text[pos:]:
        raise ParseError(f"cannot read {text[pos:] or caption!r} in {caption!r}")
    if len(objs) > MAX_OBJECTS:
        raise ParseError(f"more than {MAX_OBJECTS} objects in {caption!r}")
    if len({o.colour for o in objs}) != len(objs):
        raise ParseError(f"two objects of one colour in {caption!r}")
    for o in objs:
        if o.column is not None and not 0 <= o.column < GRID:
            raise ParseError(f"bad position in {caption!r}")
    return Query(tuple(objs), tuple(rels))


def training_caption(scene: Scene, rng: random.Random) -> str:
    """A caption of the backbone's training pool. Positions are named often (the words a rewrite that
    binds a pattern to where its object landed would use), patterns are emphasised now and then."""
    style = rng.random()
    if style < 0.5:
        cap, _ = caption_scene(scene, rng, emphasis=0.1)
    elif style < 0.85:
        cap, _ = caption_scene(scene, rng, emphasis=0.2, p_position=0.6, p_relation=0.4)
    else:
        cap, _ = caption_scene(scene, rng, emphasis=0.1, p_position=1.0)
    return cap
