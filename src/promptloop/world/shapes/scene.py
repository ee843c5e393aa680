"""Scene specification of the Shapes world: objects on a 3x3 grid over a plain background.

A `Scene` is the complete ground truth of an image (what the renderer draws). A `Query` is what a
caption asserts about an image: a subset of the scene's facts (colour and shape always, size,
absolute position and background optionally, plus pairwise relations). Rewards judge images
against queries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from promptloop.world.geometry import (  # noqa: F401  (re-exported: the world's vocabulary)
    COLUMNS,
    GRID,
    INVERSE_RELATION,
    RELATIONS,
    Relation,
    SpecError,
    check_cell,
    check_choice,
    relation_holds,
)

# Object colours (RGB, 0-255). Chosen so that several pairs are close (red/orange/pink,
# blue/purple, green/cyan): colour leakage between objects is a real failure mode.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (235, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 205, 215),
    "blue": (35, 70, 225),
    "purple": (145, 55, 200),
    "pink": (245, 125, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 12),
    "gray": (105, 105, 105),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "large")
# Radius of an object's bounding circle, in pixels of a 32 px image.
SIZE_RADIUS: dict[str, float] = {"small": 3.2, "large": 5.0}
MAX_OBJECTS = 3

# Colour-shape pairs that never appear in the backbone's training captions or images. Queries in
# the `heldout` prompt set contain at least one of them; `train` queries contain none.
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "triangle"),
        ("orange", "circle"),
        ("yellow", "diamond"),
        ("green", "square"),
        ("cyan", "triangle"),
        ("blue", "diamond"),
        ("purple", "square"),
        ("pink", "circle"),
    }
)



@dataclass(frozen=True)
class SceneObject:
    shape: str  # one of SHAPES
    colour: str  # one of COLOURS
    size: str  # one of SIZES
    cell: tuple[int, int]  # (column, row), each in 0..GRID-1

    def __post_init__(self) -> None:
        check_choice("shape", self.shape, SHAPES)
        check_choice("colour", self.colour, COLOURS)
        check_choice("size", self.size, SIZES)
        check_cell(self.cell)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str = "black"

    def __post_init__(self) -> None:
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise SpecError(f"a scene holds 1 to {MAX_OBJECTS} objects, got {len(self.objects)}")
        check_choice("background", self.background, BACKGROUNDS)
        cells = [o.cell for o in self.objects]
        if len(set(cells)) != len(cells):
            raise SpecError("two objects share a grid cell")
        colours = [o.colour for o in self.objects]
        if len(set(colours)) != len(colours):
            raise SpecError("objects of one scene must have distinct colours")


@dataclass(frozen=True)
class ObjectQuery:
    colour: str
    shape: str
    size: str | None = None  # asserted size, if the caption names one
    column: int | None = None  # asserted absolute column, if the caption names one
    row: int | None = None  # asserted absolute row, if the caption names one


@dataclass(frozen=True)
class Query:
    objects: tuple[ObjectQuery, ...]
    relations: tuple[tuple[int, str, int], ...] = ()  # (index a, relation, index b)
    background: str | None = None

    def n_items(self) -> int:
        """Number of checkable facts (see world.shapes.rewards)."""
        n = 1 + len(self.relations) + (self.background is not None)  # 1: the object count
        for o in self.objects:
            n += 2 + (o.size is not None) + (o.column is not None) + (o.row is not None)
        return n

    def canonical(self) -> Query:
        """The same facts in a normal form: objects sorted by colour, relations as left_of/above."""
        order = sorted(range(len(self.objects)), key=lambda i: self.objects[i].colour)
        new_index = {old: new for new, old in enumerate(order)}
        rels = []
        for a, rel, b in self.relations:
            a, b = new_index[a], new_index[b]
            if rel in ("right_of", "below"):
                a, rel, b = b, INVERSE_RELATION[rel], a
            rels.append((a, rel, b))
        return Query(tuple(self.objects[i] for i in order), tuple(sorted(rels)), self.background)

    def pairs(self) -> set[tuple[str, str]]:
        return {(o.colour, o.shape) for o in self.objects}


@dataclass
class SceneSampler:
    """Seeded sampler of random scenes; `split` restricts colour-shape pairs."""

    seed: int = 0
    split: Literal["train", "heldout", "any"] = "train"
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def sample(self) -> Scene:
        rng = self._rng
        while True:
            n = rng.choices([1, 2, 3], weights=[0.2, 0.4, 0.4])[0]
            colours = rng.sample(list(COLOURS), n)
            shapes = [rng.choice(SHAPES) for _ in range(n)]
            pairs = set(zip(colours, shapes, strict=True))
            n_held = len(pairs & HELDOUT_PAIRS)
            if self.split == "train" and n_held:
                continue
            if self.split == "heldout" and not n_held:
                continue
            cells = rng.sample([(c, r) for c in range(GRID) for r in range(GRID)], n)
            objs = tuple(
                SceneObject(shape=s, colour=c, size=rng.choice(SIZES), cell=cell)
                for s, c, cell in zip(shapes, colours, cells, strict=True)
            )
            bg = rng.choices(list(BACKGROUNDS), weights=[0.6, 0.2, 0.2])[0]
            return Scene(objects=objs, background=bg)
