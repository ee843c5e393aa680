"""Caption grammar of the Shapes world: realise a Query as text (with paraphrases) and parse it back.

Paraphrase devices: several templates per structure, mention order (A left of B == B right of A),
synonyms for colours, shapes, sizes and backgrounds, optional intensifiers ("bright", "vivid") and
emphatic repetition of a colour ("a red, red circle"). `parse(realise(q)) == q` up to
`Query.canonical()` for every query (tested).
"""

from __future__ import annotations

import random
import re

from promptloop.world.shapes.scene import (
    GRID,
    INVERSE_RELATION,
    MAX_OBJECTS,
    RELATIONS,
    ObjectQuery,
    Query,
    Scene,
    SpecError,
    relation_holds,
)

COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "amber"),
    "yellow": ("yellow", "golden"),
    "green": ("green", "emerald"),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue", "azure"),
    "purple": ("purple", "violet"),
    "pink": ("pink", "rose"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {"black": ("black", "dark"), "gray": ("gray", "grey"), "white": ("white",)}
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left_of": ("left of", "to the left of"),
    "right_of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
INTENSIFIERS = ("bright", "vivid", "solid")
# Words that carry no meaning of their own in a caption.
FILLER = {",", "and", "with", "there", "is", "are", "picture", "image", "of", "showing", "in", "two",
          "three", "objects", "shapes", ":", "on", "against", "background", *INTENSIFIERS}

_LOOKUP: dict[str, tuple[str, str]] = {}
for _kind, _table in (("colour", COLOUR_WORDS), ("shape", SHAPE_WORDS), ("size", SIZE_WORDS)):
    for _canon, _words in _table.items():
        for _w in _words:
            _LOOKUP[_w] = (_kind, _canon)
_BG_LOOKUP = {w: canon for canon, words in BACKGROUND_WORDS.items() for w in words}


class ParseError(ValueError):
    """A caption that is not a sentence of the world's grammar."""


# ----------------------------------------------------------------------------- realise


def _position_phrase(o: ObjectQuery) -> str:
    if o.column is None and o.row is None:
        return ""
    if o.column is not None and o.row is not None:
        if (o.column, o.row) == (1, 1):
            return " in the centre"
        if o.column == 1 or o.row == 1:
            raise SpecError("a position with both column and row must be a corner or the centre")
        return f" in the {('top', '', 'bottom')[o.row]} {('left', '', 'right')[o.column]}"
    if o.column is not None:
        if o.column == 1:
            raise SpecError("the centre column alone cannot be named")
        return f" on the {('left', '', 'right')[o.column]}"
    assert o.row is not None
    if o.row == 1:
        raise SpecError("the middle row alone cannot be named")
    return f" at the {('top', '', 'bottom')[o.row]}"


def _noun_phrase(o: ObjectQuery, rng: random.Random, det: str = "a", emphasis: float = 0.0) -> str:
    colour = rng.choice(COLOUR_WORDS[o.colour])
    shape = rng.choice(SHAPE_WORDS[o.shape])
    size = rng.choice(SIZE_WORDS[o.size]) if o.size else None
    plain = colour
    if rng.random() < emphasis:
        colour = rng.choice([f"{rng.choice(INTENSIFIERS)} {colour}", f"{colour}, {colour}"])
    if size and rng.random() < 0.85:
        words = f"{size} {colour} {shape}"
    elif rng.random() < 0.15 and det == "a":
        words = f"{size + ' ' if size else ''}{shape} in {plain}"
    else:
        words = f"{colour} {size + ' ' if size else ''}{shape}"
    if det == "a":
        det = "an" if words[0] in "aeiou" else "a"
    return f"{det} {words}{_position_phrase(o)}"


def _ref(o: ObjectQuery, rng: random.Random) -> str:
    return f"the {rng.choice(COLOUR_WORDS[o.colour])} {rng.choice(SHAPE_WORDS[o.shape])}"


def realise(query: Query, rng: random.Random | None = None, emphasis: float = 0.0) -> str:
    """Turn a Query into one of its captions, chosen by `rng` (seeded; default: the first of each)."""
    rng = rng or random.Random(0)
    objs = list(query.objects)
    rels = list(query.relations)
    if len(rels) > 1:
        raise SpecError("the grammar expresses at most one relation")
    np_ = [_noun_phrase(o, rng, emphasis=emphasis) for o in objs]
    n = len(objs)
    if n == 1:
        body = rng.choice(["{0}", "a picture of {0}", "there is {0}"]).format(*np_)
    elif n == 2 and rels:
        a, rel, b = rels[0]
        if rng.random() < 0.5:
            body = f"{np_[a]} {rng.choice(RELATION_WORDS[rel])} {np_[b]}"
        else:
            body = f"{np_[b]} {rng.choice(RELATION_WORDS[INVERSE_RELATION[rel]])} {np_[a]}"
        if rng.random() < 0.2:
            body = "there is " + body
    elif n == 2:
        body = rng.choice(["{0} and {1}", "{0} with {1}", "{1} and {0}", "two shapes: {0} and {1}"]).format(*np_)
    elif n == 3 and rels:
        a, rel, b = rels[0]
        (c,) = {0, 1, 2} - {a, b}
        if rng.random() < 0.5:
            body = f"{np_[a]} {rng.choice(RELATION_WORDS[rel])} {np_[b]}, and {np_[c]}"
        else:
            order = [0, 1, 2]
            rng.shuffle(order)
            listed = f"{np_[order[0]]}, {np_[order[1]]} and {np_[order[2]]}"
            body = f"{listed}, with {_ref(objs[a], rng)} {rng.choice(RELATION_WORDS[rel])} {_ref(objs[b], rng)}"
    elif n == 3:
        order = [0, 1, 2]
        rng.shuffle(order)
        body = rng.choice(["{0}, {1} and {2}", "three shapes: {0}, {1} and {2}"]).format(*(np_[i] for i in order))
    else:
        raise SpecError(f"a query holds 1 to {MAX_OBJECTS} objects, got {n}")
    if query.background:
        bg = rng.choice(BACKGROUND_WORDS[query.background])
        if rng.random() < 0.7:
            body = f"{body} on a {bg} background"
        else:
            body = f"{bg} background with {body}"
    return body


def query_from_scene(
    scene: Scene,
    rng: random.Random,
    p_size: float = 0.5,
    p_position: float = 0.2,
    p_background: float = 0.3,
    p_relation: float = 0.7,
) -> Query:
    """Choose which facts of `scene` a caption asserts (each with the given probability)."""
    objs = []
    for o in scene.objects:
        col: int | None = None
        row: int | None = None
        if rng.random() < p_position:
            c, r = o.cell
            if (c, r) == (1, 1) or (c != 1 and r != 1):
                col, row = c, r
            elif c != 1:
                col = c
            else:
                row = r
        objs.append(ObjectQuery(o.colour, o.shape, o.size if rng.random() < p_size else None, col, row))
    rels: list[tuple[int, str, int]] = []
    if len(objs) >= 2 and rng.random() < p_relation:
        a, b = rng.sample(range(len(objs)), 2)
        holding = [r for r in RELATIONS if relation_holds(scene.objects[a].cell, r, scene.objects[b].cell)]
        if holding:
            rels.append((a, rng.choice(holding), b))
    bg = scene.background if rng.random() < p_background else None
    return Query(tuple(objs), tuple(rels), bg)


# ----------------------------------------------------------------------------- parse

_RELATION_PATTERNS = [
    (re.compile(r"\b(?:to the )?left of\b"), " <left_of> "),
    (re.compile(r"\b(?:to the )?right of\b"), " <right_of> "),
    (re.compile(r"\b(?:above|over)\b"), " <above> "),
    (re.compile(r"\b(?:below|under|beneath)\b"), " <below> "),
]
_POSITION_PATTERNS = [
    (re.compile(r"\bin the (top|bottom) (left|right)\b"), None),
    (re.compile(r"\bin the (?:centre|center|middle)\b"), (1, 1)),
    (re.compile(r"\bon the (left|right)\b"), None),
    (re.compile(r"\bat the (top|bottom)\b"), None),
]
_COLS = {"left": 0, "right": 2}
_ROWS = {"top": 0, "bottom": 2}


def _pos_token(m: re.Match[str]) -> str:
    words = m.group(0).split()
    col = next((_COLS[w] for w in words if w in _COLS), None)
    row = next((_ROWS[w] for w in words if w in _ROWS), None)
    if col is None and row is None:
        col, row = 1, 1
    return f" <pos:{'' if col is None else col}:{'' if row is None else row}> "


def parse(caption: str) -> Query:
    """Parse a caption into the Query it asserts. Raises ParseError naming the problem."""
    if not isinstance(caption, str) or not caption.strip():
        raise ParseError("empty caption")
    text = " " + caption.lower().strip().rstrip(".") + " "
    text = text.replace(",", " , ").replace(":", " : ")
    background = None
    m = re.search(r"\b(\w+) background\b", text)
    if m:
        if m.group(1) not in _BG_LOOKUP:
            raise ParseError(f"unknown background colour {m.group(1)!r}")
        background = _BG_LOOKUP[m.group(1)]
        text = text[: m.start()] + " background " + text[m.end():]
        text = re.sub(r"\b(?:on|against) an? +background\b", " ", text)
    text = re.sub(r"\ban? (?:picture|image) of\b", " ", text)
    for pat, rep in _RELATION_PATTERNS:
        text = pat.sub(rep, text)
    for pat, fixed in _POSITION_PATTERNS:
        text = pat.sub(_pos_token if fixed is None else " <pos:1:1> ", text)

    objects: list[dict[str, object]] = []
    relations: list[tuple[int, str, int]] = []
    current: dict[str, object] | None = None  # the noun phrase being read
    last_np: int | None = None  # index of the last completed noun phrase's object
    pending_rel: tuple[int, str] | None = None

    def close() -> None:
        nonlocal current, last_np, pending_rel
        if current is None:
            return
        if "colour" not in current or "shape" not in current:
            missing = "colour" if "colour" not in current else "shape"
            raise ParseError(f"an object phrase without a {missing}")
        if current.pop("ref"):
            idx = next((i for i, o in enumerate(objects)
                        if o["colour"] == current["colour"] and o["shape"] == current["shape"]), None)
            if idx is None:
                raise ParseError(f"'the {current['colour']} {current['shape']}' refers to no object")
        else:
            if any(o["colour"] == current["colour"] for o in objects):
                raise ParseError(f"two objects share the colour {current['colour']}")
            objects.append(current)
            idx = len(objects) - 1
        if pending_rel is not None:
            relations.append((pending_rel[0], pending_rel[1], idx))
            pending_rel = None
        last_np, current = idx, None

    for tok in text.split():
        if tok in ("a", "an", "the"):
            close()
            current = {"ref": tok == "the"}
        elif tok.startswith("<pos:"):
            if current is None:
                raise ParseError("a position phrase outside an object phrase")
            _, c, r = tok.rstrip(">").split(":")
            current["column"] = int(c) if c else None
            current["row"] = int(r) if r else None
        elif tok.startswith("<"):
            close()
            if last_np is None:
                raise ParseError("a relation without an object before it")
            if pending_rel is not None:
                raise ParseError("two relations in a row")
            pending_rel = (last_np, tok.strip("<>"))
        elif tok in _LOOKUP:
            if current is None:
                raise ParseError(f"{tok!r} outside an object phrase (missing 'a'?)")
            kind, canon = _LOOKUP[tok]
            if kind in current and current[kind] != canon:
                raise ParseError(f"conflicting {kind}s in one object phrase")
            current[kind] = canon
        elif tok in FILLER:
            # a separator ends an object phrase once it has its noun ("a red, red circle" stays one)
            if tok in (",", "and", "with", ":") and current is not None and "shape" in current:
                close()
        else:
            raise ParseError(f"unknown word {tok!r}")
    close()
    if pending_rel is not None:
        raise ParseError("a relation without an object after it")
    if not objects:
        raise ParseError("no object in caption")
    if len(objects) > MAX_OBJECTS:
        raise ParseError(f"more than {MAX_OBJECTS} objects")
    if len(relations) > 1:
        raise ParseError("at most one relation per caption")
    if any(a == b for a, _, b in relations):
        raise ParseError("an object related to itself")
    objs = tuple(
        ObjectQuery(str(o["colour"]), str(o["shape"]), o.get("size"), o.get("column"), o.get("row"))  # type: ignore[arg-type]
        for o in objects
    )
    for o in objs:
        if o.column is not None and not 0 <= o.column < GRID:
            raise ParseError("position outside the grid")
    return Query(objs, tuple(relations), background)


def caption_scene(scene: Scene, rng: random.Random, emphasis: float = 0.0, **probs: float) -> tuple[str, Query]:
    """A random caption of `scene` and the Query it asserts."""
    q = query_from_scene(scene, rng, **probs)
    return realise(q, rng, emphasis=emphasis), q


def training_caption(scene: Scene, rng: random.Random) -> str:
    """A caption of the backbone's training pool: from terse to fully detailed, with emphasis now and then."""
    style = rng.random()
    if style < 0.55:
        cap, _ = caption_scene(scene, rng, emphasis=0.1)
    elif style < 0.85:
        cap, _ = caption_scene(scene, rng, emphasis=0.2, p_size=0.9, p_position=0.5, p_background=0.6)
    else:
        cap, _ = caption_scene(scene, rng, emphasis=0.1, p_size=1.0, p_position=1.0, p_background=1.0, p_relation=0.5)
    return cap
