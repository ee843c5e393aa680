"""Deterministic anti-aliased renderer: Scene -> float32 RGB image in [0, 1], shape (H, W, 3).

Each object's coverage is computed analytically on a supersampled grid (SUPERSAMPLE^2 samples per
pixel) and averaged, so edges are anti-aliased and the same scene always gives the same pixels.
"""

from __future__ import annotations

import numpy as np

from promptloop.world.geometry import SUPERSAMPLE, shape_mask  # noqa: F401  (re-exported)
from promptloop.world.shapes.scene import BACKGROUNDS, COLOURS, GRID, SIZE_RADIUS, Scene, SceneObject

DEFAULT_RESOLUTION = 32


def cell_centre(cell: tuple[int, int], resolution: int = DEFAULT_RESOLUTION) -> tuple[float, float]:
    """Pixel coordinates (x, y) of a grid cell's centre."""
    step = resolution / GRID
    return (cell[0] + 0.5) * step, (cell[1] + 0.5) * step


def object_coverage(obj: SceneObject, resolution: int = DEFAULT_RESOLUTION) -> np.ndarray:
    """Fractional coverage in [0, 1] of each pixel by one object, shape (H, W)."""
    s = SUPERSAMPLE
    coords = (np.arange(resolution * s, dtype=np.float32) + 0.5) / s
    x, y = np.meshgrid(coords, coords)
    cx, cy = cell_centre(obj.cell, resolution)
    r = SIZE_RADIUS[obj.size] * resolution / 32.0
    m = shape_mask(obj.shape, x, y, cx, cy, r).astype(np.float32)
    return m.reshape(resolution, s, resolution, s).mean(axis=(1, 3))


def render(scene: Scene, resolution: int = DEFAULT_RESOLUTION) -> np.ndarray:
    """Render a scene to a float32 image in [0, 1] of shape (resolution, resolution, 3)."""
    img = np.empty((resolution, resolution, 3), dtype=np.float32)
    img[:] = np.asarray(BACKGROUNDS[scene.background], dtype=np.float32) / 255.0
    for obj in scene.objects:
        a = object_coverage(obj, resolution)[..., None]
        col = np.asarray(COLOURS[obj.colour], dtype=np.float32) / 255.0
        img = img * (1.0 - a) + col * a
    return img


def render_batch(scenes: list[Scene], resolution: int = DEFAULT_RESOLUTION) -> np.ndarray:
    """Render several scenes, shape (N, H, W, 3)."""
    return np.stack([render(s, resolution) for s in scenes])
