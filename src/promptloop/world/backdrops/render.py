"""Deterministic anti-aliased renderer of the Backdrops world: Scene -> float32 RGB image in [0, 1], (H, W, 3).

The backdrop is its tinted tone plus its linear gradient; each object's coverage comes from the shared shape
masks (`world.geometry.shape_mask`) on a supersampled grid, so edges are anti-aliased and a scene always gives the
same pixels.
"""

from __future__ import annotations

import math

import numpy as np

from promptloop.world.backdrops.scene import COLOURS, GRID, RADIUS, RESOLUTION, TINTS, Backdrop, Scene
from promptloop.world.geometry import SUPERSAMPLE, shape_mask


def cell_centre(cell: tuple[int, int], resolution: int = RESOLUTION) -> tuple[float, float]:
    """Pixel coordinates (x, y) of a grid cell's centre."""
    step = resolution / GRID
    return (cell[0] + 0.5) * step, (cell[1] + 0.5) * step


def coverage(shape: str, cell: tuple[int, int], resolution: int = RESOLUTION) -> np.ndarray:
    """Fractional coverage in [0, 1] of each pixel by one object, shape (H, W)."""
    s = SUPERSAMPLE
    coords = (np.arange(resolution * s, dtype=np.float32) + 0.5) / s
    x, y = np.meshgrid(coords, coords)
    cx, cy = cell_centre(cell, resolution)
    m = shape_mask(shape, x, y, cx, cy, RADIUS * resolution / 32.0).astype(np.float32)
    return m.reshape(resolution, s, resolution, s).mean(axis=(1, 3))


def render_backdrop(backdrop: Backdrop, resolution: int = RESOLUTION) -> np.ndarray:
    """The backdrop alone, float32 (H, W, 3) in [0, 1]."""
    t = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution - 0.5  # -0.5 .. 0.5
    x, y = np.meshgrid(t, t)
    ramp = 2.0 * backdrop.gradient * (x * math.cos(backdrop.angle) + y * math.sin(backdrop.angle))  # +-gradient
    value = backdrop.value + ramp
    tint = np.asarray(TINTS[backdrop.tint], dtype=np.float32)
    return np.clip(value[..., None] * tint, 0.0, 1.0).astype(np.float32)


def render(scene: Scene, resolution: int = RESOLUTION) -> np.ndarray:
    """Render a scene to a float32 image in [0, 1] of shape (resolution, resolution, 3)."""
    img = render_backdrop(scene.backdrop, resolution)
    for obj in scene.objects:
        a = coverage(obj.shape, obj.cell, resolution)[..., None]
        col = np.asarray(COLOURS[obj.colour], dtype=np.float32) / 255.0
        img = img * (1.0 - a) + col * a
    return img.astype(np.float32)
