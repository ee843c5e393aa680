"""Classical-CV analyzer of Patterns-world images (numpy only): image -> objects with their pattern.

Per image (lengths scale with the resolution; figures for 64 px):

1. **Foreground.** The background is the median of the border; a pixel is foreground when its largest
   channel difference from it exceeds 0.25 (soft coverage: that difference over 0.6, clipped to [0, 1]).
2. **Marks and colours.** A foreground pixel is a *mark* (the white of stripes, dots and checks) when its
   smallest channel exceeds 0.62 or it is a grey blend of the white with the background (a mark on an
   object's edge), else it is labelled with the palette colour whose blends explain it best.
3. **Components.** 8-connected components of the foreground; one holding two palette colours with at
   least a quarter of its coloured pixels each is split by colour (touching objects), its marks going to
   the nearest coloured pixel's part. Specks (soft area below a quarter of the smallest shape's) are dropped.
4. **Colour**: the majority palette label of the component's coloured pixels.
5. **Shape** by template fitting: the component's soft coverage against each shape's anti-aliased mask
   at the object radius, centred at the centroid corrected for the shape's own centroid offset, over a
   3x3 grid of sub-pixel shifts and two blurs (0 and 0.8 px). The best fit gives the shape and the centre;
   the centre gives the cell.
6. **Pattern**: inside the fitted shape (shrunk by a pixel), the fraction of mark pixels decides *solid*
   (below 0.08); otherwise the normalised correlation of the mark map with each pattern's mark mask over
   all phases of its period (a generated pattern need not be locked to the object's centre) picks the best.

`analyzer_check` measures the round trip on rendered scenes, clean and degraded (blur, noise); the
figures are in `promptloop world analyzer-check --world v2 --json`. The analyzer never raises on odd
image content; it raises `AnalyzerInputError` on malformed input.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from promptloop.world.geometry import shape_mask
from promptloop.world.imaging import (
    AnalyzerInputError,
    _blur2d,
    gaussian_blur,
    label_components,
    round_trip_accuracy,
    to_image_batch,
)
from promptloop.world.imaging import score_detection as _score
from promptloop.world.patterns.render import pattern_mask, render
from promptloop.world.patterns.scene import (
    COLOURS,
    GRID,
    MARK_COLOUR,
    OBJECT_RADIUS,
    PATTERN_PERIOD,
    PATTERNS,
    RESOLUTION,
    SHAPES,
    Scene,
    SceneSampler,
)

COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
PALETTE = np.asarray([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float64) / 255.0
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "pattern", "cell")
FOREGROUND_DIFF = 0.25  # largest channel difference from the background that makes a pixel foreground
MARK_MIN_CHANNEL = 0.62  # a foreground pixel whose smallest channel exceeds this is a white mark
SOLID_MAX_MARKS = 0.08  # mark fraction inside an object below which it is solid
MAX_DETECTIONS = 9
_SUB = 4  # supersampling of templates
_SHIFTS = (-0.75, 0.0, 0.75)  # sub-pixel centre shifts searched by the shape fit, in px of 64 px
_BLURS = (0.0, 0.8)  # template blurs, in px of 64 px


@dataclass(frozen=True)
class PatternObject:
    """One object found in an image."""

    shape: str  # one of scene.SHAPES
    colour: str  # one of scene.COLOURS
    pattern: str  # one of scene.PATTERNS
    cell: tuple[int, int]  # (column, row) on the GRID x GRID lattice
    centroid: tuple[float, float]  # fitted centre (x, y) in pixels
    area: float  # soft area, in pixels
    mark_fraction: float  # fraction of the object's interior covered by white marks
    fit_error: float = 0.0  # mean squared shape-template mismatch (0 = perfect)


@dataclass(frozen=True)
class PatternAnalysis:
    """Everything the analyzer reads from one image."""

    objects: tuple[PatternObject, ...]
    background_rgb: tuple[float, float, float]  # the border median, in [0, 1]


# ----------------------------------------------------------------------------- templates


@lru_cache(maxsize=16)
def _centroid_offset(shape: str, radius: float) -> tuple[float, float]:
    g = (np.arange(400) + 0.5) / 400 * 4 * radius - 2 * radius
    x, y = np.meshgrid(g, g)
    m = shape_mask(shape, x, y, 0.0, 0.0, radius)
    return float(x[m].mean()), float(y[m].mean())


@lru_cache(maxsize=2048)
def _shape_template(shape: str, radius: float, half: int, fx: float, fy: float, blur: float) -> np.ndarray:
    """Coverage of a shape on a (2*half+1)^2 window; its centre at (half + fx, half + fy) window pixels."""
    n = 2 * half + 1
    coords = (np.arange(n * _SUB, dtype=np.float64) + 0.5) / _SUB
    x, y = np.meshgrid(coords, coords)
    cov = shape_mask(shape, x, y, half + fx, half + fy, radius).astype(np.float64).reshape(n, _SUB, n, _SUB).mean(axis=(1, 3))
    out = _blur2d(cov, blur) if blur > 0 else cov
    out.setflags(write=False)
    return out


def _window(a: np.ndarray, x0: int, y0: int, half: int) -> np.ndarray:
    """The (2*half+1)^2 window of `a` whose top-left pixel is (x0 - half, y0 - half), zero outside."""
    h, w = a.shape
    n = 2 * half + 1
    out = np.zeros((n, n), dtype=a.dtype)
    xs, ys = max(0, x0 - half), max(0, y0 - half)
    xe, ye = min(w, x0 + half + 1), min(h, y0 + half + 1)
    if xs < xe and ys < ye:
        out[ys - (y0 - half) : ye - (y0 - half), xs - (x0 - half) : xe - (x0 - half)] = a[ys:ye, xs:xe]
    return out


def _fit_shape(cov: np.ndarray, cx: float, cy: float, scale: float) -> tuple[str, tuple[float, float], float]:
    """(shape, centre, error) of the best template for the coverage map `cov` of one component."""
    radius = OBJECT_RADIUS * scale
    half = int(math.ceil(radius * 1.25 + 2))
    best: tuple[float, str, tuple[float, float]] | None = None
    for shape in SHAPES:
        ox, oy = _centroid_offset(shape, radius)
        for sx, sy in itertools.product(_SHIFTS, _SHIFTS):
            ex, ey = cx - ox + sx * scale, cy - oy + sy * scale  # the template centre in image pixels
            ix, iy = int(math.floor(ex)), int(math.floor(ey))
            obs = _window(cov, ix, iy, half)
            fx, fy = round(ex - ix, 3), round(ey - iy, 3)
            for blur in _BLURS:
                err = float(((obs - _shape_template(shape, radius, half, fx, fy, round(blur * scale, 3))) ** 2).mean())
                if best is None or err < best[0]:
                    best = (err, shape, (ex, ey))
    assert best is not None
    return best[1], best[2], best[0]


@lru_cache(maxsize=64)
def _phase_masks(pattern: str, period_px: float) -> np.ndarray:
    """Mark masks of `pattern` on one period-sized tile for every integer phase: (phases, side, side)."""
    side = int(round(period_px))
    xx = (np.arange(_SUB * side) + 0.5) / _SUB
    out = []
    for px, py in itertools.product(range(side), range(side)):
        gx, gy = np.meshgrid(xx + px, xx + py)
        out.append(pattern_mask(pattern, gx - side / 2, gy - side / 2, period_px).astype(np.float64)
                   .reshape(side, _SUB, side, _SUB).mean(axis=(1, 3)))
    arr = np.stack(out)
    arr.setflags(write=False)
    return arr


def _classify_pattern(marks: np.ndarray, interior: np.ndarray, scale: float) -> tuple[str, float]:
    """(pattern, mark fraction) of one object from its soft mark map and boolean interior mask."""
    if interior.sum() < 4:
        return "solid", 0.0
    frac = float(marks[interior].mean())
    if frac < SOLID_MAX_MARKS:
        return "solid", frac
    period = PATTERN_PERIOD * scale
    side = int(round(period))
    ys, xs = np.nonzero(interior)
    y0, x0 = ys.min(), xs.min()
    h, w = ys.max() - y0 + 1, xs.max() - x0 + 1
    reps_y, reps_x = -(-h // side) + 1, -(-w // side) + 1
    obs = marks[y0 : y0 + h, x0 : x0 + w]
    inside = interior[y0 : y0 + h, x0 : x0 + w]
    o = obs[inside] - obs[inside].mean()
    on = float(np.sqrt((o * o).sum())) or 1.0
    best, best_score = "solid", -np.inf
    for pattern in PATTERNS[1:]:
        tiles = _phase_masks(pattern, period)
        for tile in tiles:
            t = np.tile(tile, (reps_y, reps_x))[:h, :w][inside]
            t = t - t.mean()
            tn = float(np.sqrt((t * t).sum()))
            if tn == 0:
                continue
            score = float((o * t).sum()) / (on * tn)
            if score > best_score:
                best, best_score = pattern, score
    return best, frac


# ----------------------------------------------------------------------------- analysis


def _split_by_colour(comp: np.ndarray, labels: np.ndarray, colour_px: np.ndarray) -> list[np.ndarray]:
    """The parts of one component (a boolean mask), split when it holds two substantial palette colours."""
    lab = labels[comp & colour_px]
    if lab.size == 0:
        return [comp]
    counts = np.bincount(lab, minlength=len(COLOUR_NAMES))
    major = [c for c in np.argsort(-counts)[:2] if counts[c] >= max(0.25 * lab.size, 12)]
    if len(major) < 2:
        return [comp]
    ys, xs = np.nonzero(comp & colour_px)
    keep = np.isin(labels[ys, xs], major)
    ys, xs, owner = ys[keep], xs[keep], labels[ys, xs][keep]
    parts = [np.zeros_like(comp) for _ in major]
    cy, cx = np.nonzero(comp)
    d = (cy[:, None] - ys[None, :]) ** 2 + (cx[:, None] - xs[None, :]) ** 2
    nearest = owner[np.argmin(d, axis=1)]
    for k, c in enumerate(major):
        sel = nearest == c
        parts[k][cy[sel], cx[sel]] = True
    return parts


def _segment_residual(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each pixel of `p` (H, W, 3) from the RGB segment a-b."""
    d = b - a
    t = np.clip(((p - a) @ d) / max(float(d @ d), 1e-12), 0.0, 1.0)
    return np.sqrt(((p - a - t[..., None] * d) ** 2).sum(axis=-1))


def _unmix_labels(img: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's palette colour: the one whose blends with the background (object edges) or with the white
    of the marks (pattern edges) explain the pixel best. A plain nearest-colour label would call a red-white
    blend pink and a dark pink edge red. Also returns where a blend of the white with the background (a mark
    on an object's edge: grey) explains the pixel better than every colour."""
    white = np.asarray(MARK_COLOUR, dtype=np.float64) / 255.0
    res = np.stack([np.minimum(_segment_residual(img, bg, c), _segment_residual(img, c, white)) for c in PALETTE], axis=-1)
    return np.argmin(res, axis=-1), _segment_residual(img, bg, white) < res.min(axis=-1)


@lru_cache(maxsize=1)
def _min_object_area() -> float:
    """A quarter of the smallest shape's area at 64 px: components below it are specks."""
    g = np.arange(64) - 32.0
    x, y = np.meshgrid(g, g)
    return 0.25 * min(float(shape_mask(s, x, y, 0.0, 0.0, OBJECT_RADIUS).sum()) for s in SHAPES)


def _analyze_one(img: np.ndarray) -> PatternAnalysis:
    h, w, _ = img.shape
    scale = min(h, w) / RESOLUTION
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]], axis=0)
    bg = np.median(border, axis=0)
    diff = np.abs(img - bg).max(axis=-1)
    fg = diff > FOREGROUND_DIFF
    cov = np.clip(diff / 0.6, 0.0, 1.0) * (diff > FOREGROUND_DIFF * 0.5)
    labels, grey = _unmix_labels(img, bg)
    mark_px = fg & ((img.min(axis=-1) > MARK_MIN_CHANNEL) | grey)
    colour_px = fg & ~mark_px
    marks_soft = np.clip((img.min(axis=-1) - 0.45) / 0.35, 0.0, 1.0) * fg
    comps = label_components(np.where(fg, 0, -1))
    min_area = _min_object_area() * scale * scale
    gx, gy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    objects = []
    for k in range(int(comps.max()) + 1):
        for part in _split_by_colour(comps == k, labels, colour_px):
            area = float(cov[part].sum())
            if area < min_area or not (part & fg & ~mark_px).any():
                continue
            voters = part & colour_px
            pcov = np.where(part, cov, 0.0)
            ys, xs = np.nonzero(part)
            wts = pcov[ys, xs]
            cx, cy = float((xs * wts).sum() / wts.sum()) + 0.5, float((ys * wts).sum() / wts.sum()) + 0.5
            shape, (ex, ey), err = _fit_shape(pcov, cx, cy, scale)
            colour = COLOUR_NAMES[int(np.bincount(labels[voters], minlength=len(COLOUR_NAMES)).argmax())]
            radius = OBJECT_RADIUS * scale
            interior = shape_mask(shape, gx, gy, ex, ey, max(radius - 1.5 * scale, 1.0)) & part
            pattern, frac = _classify_pattern(marks_soft, interior, scale)
            step_x, step_y = w / GRID, h / GRID
            cell = (min(GRID - 1, max(0, int(ex // step_x))), min(GRID - 1, max(0, int(ey // step_y))))
            objects.append(PatternObject(shape, colour, pattern, cell, (ex, ey), area, frac, err))
    objects.sort(key=lambda o: -o.area)
    return PatternAnalysis(tuple(objects[:MAX_DETECTIONS]), tuple(float(v) for v in bg))  # type: ignore[arg-type]


def analyze_scene(image: Any) -> PatternAnalysis:
    """Analyze one image (any layout `to_image_batch` accepts)."""
    batch = to_image_batch(image)
    if batch.shape[0] != 1:
        raise AnalyzerInputError(f"analyze_scene takes one image, got a batch of {batch.shape[0]}")
    return _analyze_one(batch[0])


def analyze_scenes(images: Any) -> list[PatternAnalysis]:
    """Analyze a batch of images."""
    return [_analyze_one(img) for img in to_image_batch(images)]


# ----------------------------------------------------------------------------- round-trip check


def score_detection(scene: Scene, detected: Sequence[Any]) -> dict[str, tuple[int, int]]:
    """(correct, total) per attribute and for the count, under the best object assignment."""
    return _score(scene.objects, detected, ATTRIBUTES)


def _accuracy(scenes: Sequence[Scene], images: np.ndarray) -> tuple[float, dict[str, float]]:
    return round_trip_accuracy(scenes, images, _analyze_one, ATTRIBUTES)


def analyzer_check(n: int = 500, seed: int = 0) -> dict[str, Any]:
    """Round-trip accuracy of the analyzer on rendered scenes, clean and degraded.

    Returns {"attribute_accuracy": clean accuracy over shape, colour, pattern and cell of every object plus
    the count of every image, "count_accuracy", "per_attribute", "robustness": {condition: accuracy},
    "robustness_per_attribute", "n", "seconds"}.
    """
    t0 = time.perf_counter()
    sampler = SceneSampler(seed, "any")
    scenes = [sampler.sample() for _ in range(n)]
    clean = np.stack([render(s) for s in scenes]).astype(np.float64)
    acc, per = _accuracy(scenes, clean)
    rng = np.random.default_rng(seed)
    conditions = {
        "blur_0.5": lambda x: gaussian_blur(x, 0.5),
        "blur_0.8": lambda x: gaussian_blur(x, 0.8),
        "noise_0.03": lambda x: np.clip(x + rng.normal(0.0, 0.03, x.shape), 0.0, 1.0),
        "noise_0.06": lambda x: np.clip(x + rng.normal(0.0, 0.06, x.shape), 0.0, 1.0),
    }
    robustness: dict[str, float] = {}
    robust_per: dict[str, dict[str, float]] = {}
    for name, fn in conditions.items():
        robustness[name], robust_per[name] = _accuracy(scenes, fn(clean))
    return {"world": "patterns", "attribute_accuracy": acc, "count_accuracy": per["count"], "per_attribute": per,
            "robustness": robustness, "robustness_per_attribute": robust_per, "n": n,
            "seconds": time.perf_counter() - t0}


__all__ = ["ATTRIBUTES", "AnalyzerInputError", "PatternAnalysis", "PatternObject", "analyze_scene", "analyze_scenes",
           "analyzer_check", "score_detection"]
