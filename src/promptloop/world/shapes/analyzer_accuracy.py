"""Round-trip accuracy of the Shapes-world analyzer on rendered scenes, clean and degraded
(`promptloop world analyzer-check`; the measured figures are in docs/worlds.md).

`analyzer_check` renders `n` scenes of `SceneSampler(seed, "any")` and scores the analyzer's detections against
them (every object's shape, colour, size and cell plus one object-count fact per image) clean, blurred, noised and
shaded (`render_shaded`: each object's colour drifting across it, as in generated images).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from promptloop.world.imaging import gaussian_blur, round_trip_accuracy
from promptloop.world.imaging import score_detection as _score
from promptloop.world.shapes.analyzer import COLOUR_NAMES, PALETTE, analyze_array
from promptloop.world.shapes.render import object_coverage, render
from promptloop.world.shapes.scene import BACKGROUNDS, Scene, SceneSampler

ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "cell")


def score_detection(scene: Scene, detected: Sequence[Any]) -> dict[str, tuple[int, int]]:
    """(correct, total) per attribute and for the count, under the best object assignment."""
    return _score(scene.objects, detected, ATTRIBUTES)


def _accuracy(scenes: Sequence[Scene], images: np.ndarray) -> tuple[float, dict[str, float]]:
    return round_trip_accuracy(scenes, images, analyze_array, ATTRIBUTES)


def render_shaded(scene: Scene, rng: np.random.Generator, strength: float = 0.45, resolution: int = 32) -> np.ndarray:
    """Render with each object's colour drifting across it, as in generated images.

    Along a random direction the colour is mixed linearly from its own (one edge) to a fraction
    `strength` of the nearest other palette colour (the opposite edge): e.g. an orange disc with a red rim.
    """
    img = np.empty((resolution, resolution, 3), dtype=np.float64)
    img[:] = np.asarray(BACKGROUNDS[scene.background], dtype=np.float64) / 255.0
    coords = np.arange(resolution, dtype=np.float64) + 0.5
    x, y = np.meshgrid(coords, coords)
    for obj in scene.objects:
        cov = object_coverage(obj, resolution)[..., None].astype(np.float64)
        col = PALETTE[COLOUR_NAMES.index(obj.colour)]
        dist = ((PALETTE - col) ** 2).sum(axis=1)
        dist[COLOUR_NAMES.index(obj.colour)] = np.inf
        near = PALETTE[int(np.argmin(dist))]
        theta = rng.uniform(0.0, 2.0 * math.pi)
        proj = np.cos(theta) * x + np.sin(theta) * y
        inside = cov[..., 0] > 0
        lo, hi = proj[inside].min(), proj[inside].max()
        t = strength * (proj - lo) / max(hi - lo, 1e-6)
        shaded = col * (1.0 - t[..., None]) + near * t[..., None]
        img = img * (1.0 - cov) + shaded * cov
    return img


def analyzer_check(n: int = 500, seed: int = 0, resolution: int = 32) -> dict[str, Any]:
    """Round-trip accuracy of the analyzer on rendered scenes, clean and degraded.

    Returns {"attribute_accuracy": clean accuracy over shape, colour, size, cell of every object plus
    the count of every image, "count_accuracy", "per_attribute": {attr: accuracy}, "robustness":
    {"blur_0.5", "blur_0.8", "noise_0.03", "noise_0.06", "shading_0.45": attribute accuracy},
    "robustness_per_attribute": {condition: {attr: accuracy}}, "n", "seconds"}.
    """
    t0 = time.perf_counter()
    sampler = SceneSampler(seed, "any")
    scenes = [sampler.sample() for _ in range(n)]
    clean = np.stack([render(s, resolution) for s in scenes]).astype(np.float64)
    acc, per = _accuracy(scenes, clean)
    rng = np.random.default_rng(seed)
    conditions = {
        "blur_0.5": lambda x: gaussian_blur(x, 0.5 * resolution / 32),
        "blur_0.8": lambda x: gaussian_blur(x, 0.8 * resolution / 32),
        "noise_0.03": lambda x: np.clip(x + rng.normal(0.0, 0.03, x.shape), 0.0, 1.0),
        "noise_0.06": lambda x: np.clip(x + rng.normal(0.0, 0.06, x.shape), 0.0, 1.0),
    }
    shade_rng = np.random.default_rng(seed + 1)
    shaded = np.stack([render_shaded(s, shade_rng, resolution=resolution) for s in scenes])
    robustness: dict[str, float] = {}
    robust_per: dict[str, dict[str, float]] = {}
    for name, fn in conditions.items():
        robustness[name], robust_per[name] = _accuracy(scenes, fn(clean))
    robustness["shading_0.45"], robust_per["shading_0.45"] = _accuracy(scenes, shaded)
    return {
        "attribute_accuracy": acc,
        "count_accuracy": per["count"],
        "per_attribute": per,
        "robustness": robustness,
        "robustness_per_attribute": robust_per,
        "n": n,
        "seconds": time.perf_counter() - t0,
    }


__all__ = ["ATTRIBUTES", "analyzer_check", "render_shaded", "score_detection"]
