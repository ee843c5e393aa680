"""Scene specification of the Backdrops world (world v3): shapes on a 3x3 grid over a backdrop no caption names.

A `Scene` is the whole ground truth of an image: 1-3 objects (a shape and a colour each, one size) in distinct
cells, over a `Backdrop`: a tone drawn independently of everything else, from a wide luminance range (sRGB value
0.15-0.85), with one of a few faint tints and a faint linear gradient, so that it is a continuum and not one of
a few nameable values. Object colours are drawn independently of the backdrop and of each other (two objects may
share a colour). The palette's relative luminances spread from 0.007 (black) to 0.913 (white), so which colour
stands out depends on the backdrop.

A `Query` is what a caption asserts: the objects' shapes always, their colours only where named (``None``: left
open), absolute positions where named, pairwise relations. No caption and no query ever names the backdrop.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

from promptloop.world.geometry import (  # noqa: F401  (GRID, INVERSE_RELATION, RELATIONS re-exported)
    GRID,
    INVERSE_RELATION,
    RELATIONS,
    SpecError,
    check_cell,
    check_choice,
    check_layout,
)

RESOLUTION = 32  # image side in pixels (8x8 latents)

# Object colours (RGB 0-255), ordered by relative luminance: 0.007, 0.102, 0.165, 0.295, 0.382, 0.690, 0.913.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 24),
    "blue": (35, 70, 225),
    "red": (220, 35, 35),
    "green": (40, 170, 60),
    "orange": (245, 140, 20),
    "yellow": (235, 220, 40),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
RADIUS = 4.2  # every object's bounding radius, in pixels of a 32 px image
MAX_OBJECTS = 3

# The backdrop: base sRGB value uniform in [VALUE_MIN, VALUE_MAX], times a tint, plus a linear gradient of
# amplitude up to GRADIENT_MAX (half the value difference across the image) in a random direction.
VALUE_MIN, VALUE_MAX = 0.15, 0.85
TINTS: dict[str, tuple[float, float, float]] = {
    "neutral": (1.0, 1.0, 1.0),
    "warm": (1.06, 1.0, 0.90),
    "cool": (0.92, 0.98, 1.08),
    "green": (0.95, 1.05, 0.95),
}
GRADIENT_MAX = 0.05


@dataclass(frozen=True)
class Backdrop:
    value: float  # base sRGB value in [VALUE_MIN, VALUE_MAX]
    tint: str = "neutral"  # one of TINTS
    gradient: float = 0.0  # half the value change across the image, in [0, GRADIENT_MAX]
    angle: float = 0.0  # direction of the gradient, radians

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and VALUE_MIN - 1e-9 <= self.value <= VALUE_MAX + 1e-9):
            raise SpecError(f"backdrop value {self.value} outside [{VALUE_MIN}, {VALUE_MAX}]")
        check_choice("tint", self.tint, TINTS)
        if not (math.isfinite(self.gradient) and 0.0 <= self.gradient <= GRADIENT_MAX + 1e-9):
            raise SpecError(f"backdrop gradient {self.gradient} outside [0, {GRADIENT_MAX}]")

    def rgb(self) -> tuple[float, float, float]:
        """The backdrop's colour at the image centre, sRGB in [0, 1]."""
        return tuple(min(1.0, max(0.0, self.value * t)) for t in TINTS[self.tint])  # type: ignore[return-value]


@dataclass(frozen=True)
class SceneObject:
    shape: str  # one of SHAPES
    colour: str  # one of COLOURS
    cell: tuple[int, int]  # (column, row), each in 0..GRID-1

    def __post_init__(self) -> None:
        check_choice("shape", self.shape, SHAPES)
        check_choice("colour", self.colour, COLOURS)
        check_cell(self.cell)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    backdrop: Backdrop

    def __post_init__(self) -> None:
        check_layout([o.cell for o in self.objects], MAX_OBJECTS)


@dataclass(frozen=True)
class ObjectQuery:
    shape: str
    colour: str | None = None  # None: the query leaves the colour open
    column: int | None = None  # asserted absolute column, if named
    row: int | None = None  # asserted absolute row, if named


@dataclass(frozen=True)
class Query:
    objects: tuple[ObjectQuery, ...]
    relations: tuple[tuple[int, str, int], ...] = ()  # (index a, relation, index b)

    def n_items(self) -> int:
        """Number of checkable facts: one count fact, each object's shape, its colour / column / row where
        asserted, each relation."""
        n = 1 + len(self.relations)
        for o in self.objects:
            n += 1 + (o.colour is not None) + (o.column is not None) + (o.row is not None)
        return n

    def open_colours(self) -> int:
        """How many of the query's objects leave their colour open."""
        return sum(o.colour is None for o in self.objects)


@dataclass
class SceneSampler:
    """Seeded sampler of random scenes. `split` is accepted for the world interface; every scene is drawn from
    one distribution (the world's train / heldout split is a split of query strings, `prompts`)."""

    seed: int = 0
    split: Literal["train", "heldout", "any"] = "train"
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def sample_backdrop(self) -> Backdrop:
        rng = self._rng
        return Backdrop(value=rng.uniform(VALUE_MIN, VALUE_MAX), tint=rng.choice(list(TINTS)),
                        gradient=rng.uniform(0.0, GRADIENT_MAX), angle=rng.uniform(0.0, 2 * math.pi))

    def sample(self) -> Scene:
        rng = self._rng
        n = rng.choices([1, 2, 3], weights=[0.3, 0.4, 0.3])[0]
        cells = rng.sample([(c, r) for c in range(GRID) for r in range(GRID)], n)
        objs = tuple(SceneObject(shape=rng.choice(SHAPES), colour=rng.choice(list(COLOURS)), cell=cell) for cell in cells)
        return Scene(objects=objs, backdrop=self.sample_backdrop())
