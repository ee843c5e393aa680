"""Geometry shared by the embedded worlds: the 3x3 grid of cells, pairwise relations, shape masks.

Every world places objects at the centres of a GRID x GRID lattice; relations are strict, by cell; shapes
are drawn from bounding-radius masks that renderers evaluate on a supersampled grid.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SUPERSAMPLE = 4  # samples per pixel side when renderers compute anti-aliased coverage
GRID = 3  # objects sit at the centres of a GRID x GRID lattice of cells
COLUMNS: tuple[str, ...] = ("left", "centre", "right")
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
RELATIONS: tuple[str, ...] = ("left_of", "right_of", "above", "below")
INVERSE_RELATION = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}

Relation = Literal["left_of", "right_of", "above", "below"]


class SpecError(ValueError):
    """A scene or query that violates the world's rules."""


def check_choice(kind: str, value: object, options: object) -> None:
    """SpecError "unknown KIND 'value'; expected one of (...)" unless `value` is one of `options`."""
    choices = tuple(options)  # type: ignore[call-overload]
    if value not in choices:
        raise SpecError(f"unknown {kind} {value!r}; expected one of {choices}")


def check_cell(cell: tuple[int, int]) -> None:
    """SpecError unless `cell` (column, row) lies on the GRID x GRID lattice."""
    col, row = cell
    if not (0 <= col < GRID and 0 <= row < GRID):
        raise SpecError(f"cell {cell} outside the {GRID}x{GRID} grid")


def check_layout(cells: list[tuple[int, int]], max_objects: int) -> None:
    """SpecError unless a scene holds 1 to `max_objects` objects, each in its own cell."""
    if not 1 <= len(cells) <= max_objects:
        raise SpecError(f"a scene holds 1 to {max_objects} objects, got {len(cells)}")
    if len(set(cells)) != len(cells):
        raise SpecError("two objects share a grid cell")


def relation_holds(a: tuple[int, int], rel: str, b: tuple[int, int]) -> bool:
    """Whether an object in cell `a` stands in relation `rel` to one in cell `b`."""
    if rel == "left_of":
        return a[0] < b[0]
    if rel == "right_of":
        return a[0] > b[0]
    if rel == "above":
        return a[1] < b[1]
    if rel == "below":
        return a[1] > b[1]
    raise SpecError(f"unknown relation {rel!r}; expected one of {RELATIONS}")


def shape_mask(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean mask of the points (x, y) inside a shape of bounding radius r centred at (cx, cy)."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        h = 0.86 * r
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.08 * r
    if shape == "triangle":  # apex up, base at the bottom
        top, bottom = -r, 0.85 * r
        t = (dy - top) / (bottom - top)  # 0 at the apex, 1 at the base
        return (dy >= top) & (dy <= bottom) & (np.abs(dx) <= t * 1.05 * r)
    raise ValueError(f"unknown shape {shape!r}")
