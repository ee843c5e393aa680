"""Scene specification of the Patterns world (world v2): patterned objects on a 3x3 grid, 64 px.

Each object has a colour, a shape and a **pattern** (solid, striped, dotted, checkered) drawn in
white marks of an 8 px period. At 64 px with a VAE of factor 4 (16x16 latents) the period is two latent
pixels: the highest spatial frequency the latent grid holds, which diffusion forms last, while position,
shape and colour are low-frequency and form first. The marks' phase is drawn at random per object (whole
pixels on each axis), so neither the caption nor the position fixes where the stripes or dots fall: the
noise does, late in sampling, and until then the x0 preview (a conditional mean over phases) shows the
pattern washed out. (Design iteration 1 locked the phase to the object's centre; its patterns were
visible in the preview from 25 % of sampling on.) Queries often leave positions open, so where each
object lands is decided by the noise early and known only from the x0 preview.

A `Scene` is the complete ground truth of an image; a `Query` is what a caption asserts about it:
colour, shape and pattern of every object (a caption that names no pattern means solid), positions
and one relation optionally.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from promptloop.world.geometry import (
    GRID,
    INVERSE_RELATION,
    RELATIONS,
    SpecError,
    check_cell,
    check_choice,
    check_layout,
    relation_holds,
)

__all__ = ["BACKGROUND", "COLOURS", "GRID", "HELDOUT_PAIRS", "INVERSE_RELATION", "MARK_COLOUR", "MAX_OBJECTS",
           "OBJECT_RADIUS", "PATTERNS", "PATTERN_PERIOD", "PHASES", "RELATIONS", "RESOLUTION", "SHAPES", "ObjectQuery",
           "Query", "Scene", "SceneObject", "SceneSampler", "SpecError", "relation_holds"]

RESOLUTION = 64  # image side in pixels
# Object colours (RGB, 0-255): six well-separated hues; the hard, late attribute here is the pattern.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "yellow": (235, 205, 30),
    "green": (40, 170, 60),
    "cyan": (40, 190, 205),
    "blue": (40, 80, 225),
    "pink": (235, 110, 190),
}
BACKGROUND: tuple[int, int, int] = (12, 12, 12)  # black; the one background of this world
MARK_COLOUR: tuple[int, int, int] = (245, 245, 245)  # the white of stripes, dots and checks
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")
OBJECT_RADIUS = 9.5  # bounding radius of every object, in pixels of a 64 px image
PATTERN_PERIOD = 8.0  # pixels
PHASES = 8  # the marks' phase on each axis is one of 0..PHASES-1 pixels (PHASES * step = the period)
MAX_OBJECTS = 3
PATTERN_WEIGHTS = (0.25, 0.25, 0.25, 0.25)  # how often each pattern occurs in sampled scenes

# Colour-pattern pairs that never appear in the backbone's training data. Queries of the `heldout`
# prompt set contain at least one; `train` queries contain none.
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("red", "striped"), ("yellow", "dotted"), ("green", "checkered"), ("blue", "striped"), ("pink", "dotted"),
     ("cyan", "checkered")}
)


@dataclass(frozen=True)
class SceneObject:
    shape: str  # one of SHAPES
    colour: str  # one of COLOURS
    pattern: str  # one of PATTERNS
    cell: tuple[int, int]  # (column, row), each in 0..GRID-1
    phase: tuple[int, int] = (0, 0)  # (x, y) shift of the marks from the object's centre, pixels in 0..PHASES-1

    def __post_init__(self) -> None:
        check_choice("shape", self.shape, SHAPES)
        check_choice("colour", self.colour, COLOURS)
        check_choice("pattern", self.pattern, PATTERNS)
        check_cell(self.cell)
        if not all(isinstance(v, int) and 0 <= v < PHASES for v in self.phase) or len(self.phase) != 2:
            raise SpecError(f"phase {self.phase} must be two whole pixels in 0..{PHASES - 1}")


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        check_layout([o.cell for o in self.objects], MAX_OBJECTS)
        colours = [o.colour for o in self.objects]
        if len(set(colours)) != len(colours):
            raise SpecError("objects of one scene must have distinct colours")


@dataclass(frozen=True)
class ObjectQuery:
    colour: str
    shape: str
    pattern: str = "solid"  # always asserted: a caption naming no pattern describes a solid object
    column: int | None = None  # asserted absolute column, if the caption names one
    row: int | None = None  # asserted absolute row, if the caption names one


@dataclass(frozen=True)
class Query:
    objects: tuple[ObjectQuery, ...]
    relations: tuple[tuple[int, str, int], ...] = ()  # (index a, relation, index b)

    def n_items(self) -> int:
        """Number of checkable facts (see world.patterns.rewards)."""
        n = 1 + len(self.relations)  # 1: the object count
        for o in self.objects:
            n += 3 + (o.column is not None) + (o.row is not None)
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
        return Query(tuple(self.objects[i] for i in order), tuple(sorted(rels)))

    def pairs(self) -> set[tuple[str, str]]:
        """The (colour, pattern) pairs the query names."""
        return {(o.colour, o.pattern) for o in self.objects}


@dataclass
class SceneSampler:
    """Seeded sampler of random scenes; `split` restricts colour-pattern pairs.

    Mark phases come from a second generator seeded apart, so the scenes' other facts (and every prompt set
    built from them) do not depend on whether phases are drawn."""

    seed: int = 0
    split: Literal["train", "heldout", "any"] = "train"
    _rng: random.Random = field(init=False, repr=False)
    _phase_rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.split not in ("train", "heldout", "any"):
            raise SpecError(f"unknown split {self.split!r}; expected 'train', 'heldout' or 'any'")
        self._rng = random.Random(self.seed)
        self._phase_rng = random.Random(f"phase:{self.seed}")

    def sample(self) -> Scene:
        rng = self._rng
        while True:
            n = rng.choices([1, 2, 3], weights=[0.25, 0.45, 0.3])[0]
            colours = rng.sample(list(COLOURS), n)
            patterns = rng.choices(PATTERNS, weights=PATTERN_WEIGHTS, k=n)
            n_held = len(set(zip(colours, patterns, strict=True)) & HELDOUT_PAIRS)
            if (self.split == "train" and n_held) or (self.split == "heldout" and not n_held):
                continue
            cells = rng.sample([(c, r) for c in range(GRID) for r in range(GRID)], n)
            objs = tuple(SceneObject(shape=rng.choice(SHAPES), colour=c, pattern=p, cell=cell, phase=self._phase(p))
                         for c, p, cell in zip(colours, patterns, cells, strict=True))
            return Scene(objects=objs)

    def _phase(self, pattern: str) -> tuple[int, int]:
        if pattern == "solid":
            return (0, 0)
        return (self._phase_rng.randrange(PHASES), self._phase_rng.randrange(PHASES))
