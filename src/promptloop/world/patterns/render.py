"""Deterministic anti-aliased renderer of the Patterns world: Scene -> float32 RGB in [0, 1], (64, 64, 3).

Shapes use the Shapes world's geometry (`world.geometry.shape_mask`); each object's pattern is a mask of
white marks at the object's phase (pixels from its centre), evaluated on the same supersampled grid, so edges and marks are
anti-aliased and a scene always gives the same pixels.
"""

from __future__ import annotations

import numpy as np

from promptloop.world.geometry import SUPERSAMPLE, shape_mask
from promptloop.world.patterns.scene import (
    BACKGROUND,
    COLOURS,
    GRID,
    MARK_COLOUR,
    OBJECT_RADIUS,
    PATTERN_PERIOD,
    RESOLUTION,
    Scene,
    SceneObject,
)


def cell_centre(cell: tuple[int, int], resolution: int = RESOLUTION) -> tuple[float, float]:
    """Pixel coordinates (x, y) of a grid cell's centre."""
    step = resolution / GRID
    return (cell[0] + 0.5) * step, (cell[1] + 0.5) * step


def pattern_mask(pattern: str, dx: np.ndarray, dy: np.ndarray, period: float = PATTERN_PERIOD) -> np.ndarray:
    """Boolean mask of the white marks of `pattern` at offsets (dx, dy) from an object's centre."""
    if pattern == "solid":
        return np.zeros(np.broadcast(dx, dy).shape, dtype=bool)
    if pattern == "striped":  # horizontal bands, a coloured one through the centre
        return np.mod(dy + period / 4, period) >= period / 2
    if pattern == "dotted":  # round dots on a lattice offset half a period from the centre
        ux, uy = np.mod(dx, period) - period / 2, np.mod(dy, period) - period / 2
        return ux * ux + uy * uy <= (0.275 * period) ** 2
    if pattern == "checkered":  # squares of half a period, corners meeting at the centre
        return np.mod(np.floor(dx / (period / 2)) + np.floor(dy / (period / 2)), 2) == 1
    raise ValueError(f"unknown pattern {pattern!r}")


def _supersampled_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(resolution * SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE
    return np.meshgrid(coords, coords)


def _downsample(mask: np.ndarray, resolution: int) -> np.ndarray:
    s = SUPERSAMPLE
    return mask.astype(np.float32).reshape(resolution, s, resolution, s).mean(axis=(1, 3))


def object_layers(obj: SceneObject, resolution: int = RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    """(coverage of the object's colour, coverage of its white marks), each (H, W) in [0, 1]."""
    x, y = _supersampled_grid(resolution)
    cx, cy = cell_centre(obj.cell, resolution)
    scale = resolution / RESOLUTION
    inside = shape_mask(obj.shape, x, y, cx, cy, OBJECT_RADIUS * scale)
    px, py = obj.phase
    marks = inside & pattern_mask(obj.pattern, (x - cx) / scale - px, (y - cy) / scale - py)
    return _downsample(inside & ~marks, resolution), _downsample(marks, resolution)


def render(scene: Scene, resolution: int = RESOLUTION) -> np.ndarray:
    """Render a scene to a float32 image in [0, 1] of shape (resolution, resolution, 3)."""
    img = np.empty((resolution, resolution, 3), dtype=np.float32)
    img[:] = np.asarray(BACKGROUND, dtype=np.float32) / 255.0
    mark = np.asarray(MARK_COLOUR, dtype=np.float32) / 255.0
    for obj in scene.objects:
        body, marks = object_layers(obj, resolution)
        col = np.asarray(COLOURS[obj.colour], dtype=np.float32) / 255.0
        a = (body + marks)[..., None]
        img = img * (1.0 - a) + col * body[..., None] + mark * marks[..., None]
    return img


def render_batch(scenes: list[Scene], resolution: int = RESOLUTION) -> np.ndarray:
    """Render several scenes, shape (N, H, W, 3)."""
    return np.stack([render(s, resolution) for s in scenes])
