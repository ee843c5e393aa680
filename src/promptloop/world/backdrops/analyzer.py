"""Classical-CV analyzer of Backdrops-world images (numpy only): image -> backdrop and objects.

Objects only ever sit at the centres of the 3x3 grid's cells and fit inside their cell, so the analyzer reads
the image cell by cell. Per image (lengths scale with the resolution; figures are for 32 px):

1. **Backdrop.** A plane per channel (a + b x + c y: the backdrop's tone and its linear gradient) is fitted by
   least squares to the border pixels, then twice more to every pixel within 3 noise-sigmas (at least 0.04) of
   the current plane, so objects drop out of the fit. The noise level is the residuals' median absolute deviation.
   A noisy image (noise above `NOISY`) is then blurred (sigma `DENOISE_SIGMA` px) for the steps below, so that
   objects of low contrast are not lost in the noise; the templates include blurred shapes.
2. **Unmixing.** Every pixel ``p`` is explained, for each palette colour ``c``, as ``bg + alpha (c - bg)`` with
   the fitted backdrop ``bg`` at that pixel: ``alpha`` is the projection of ``p - bg`` on ``c - bg`` (clipped to
   [0, 1]), the residual the distance of ``p`` from that segment.
3. **Cells.** In each cell the significant pixels (farther than max(0.05, 3 sigma) from the backdrop) vote for a
   colour: the palette colour of least summed squared residual over them. The cell holds an object when the soft
   area (the sum of that colour's alpha over the cell's significant pixels) reaches `MIN_AREA` px (a third of the
   smallest shape's area).
4. **Shape** by template fitting: the cell's alpha map is compared (sum of squared differences) with the
   renderer's own coverage of each shape, blurred with a Gaussian of sigma 0, 0.6 or 1.0 px and shifted by up to
   one pixel, so blurred and slightly displaced objects match too.
5. **Legibility** per object: the WCAG contrast ratio between the object's own colour (the mean of its pixels of
   alpha >= 0.7; the palette colour where there are none) and the fitted backdrop over its cell
   (`legibility.legibility`).

`analyzer_check` (below) renders scenes and reports accuracy per attribute. The analyzer never raises on odd
image content (it returns what it finds, possibly nothing); it raises `AnalyzerInputError` on malformed input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from promptloop.world.backdrops.legibility import contrast_ratio, legibility, relative_luminance
from promptloop.world.backdrops.render import coverage, render
from promptloop.world.backdrops.scene import COLOURS, GRID, SHAPES, Scene, SceneSampler
from promptloop.world.imaging import AnalyzerInputError, gaussian_blur, to_image_batch  # noqa: F401  (re-exported)

COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
PALETTE = np.asarray([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float64) / 255.0  # (K, 3)
MIN_AREA = 11.0  # soft area (px at 32 px) a cell's object must reach; the smallest shape (triangle) covers ~34
TEMPLATE_BLURS: tuple[float, ...] = (0.0, 0.6, 1.0)
SHIFTS: tuple[int, ...] = (-1, 0, 1)
NOISY = 0.02  # above this estimated noise std the image is blurred (sigma DENOISE_SIGMA px) before objects are read
DENOISE_SIGMA = 0.8
NOISE_AFTER_BLUR = 0.35  # a Gaussian of sigma 0.8 px leaves about 1 / (2 sqrt(pi) 0.8) of white noise's std


@dataclass(frozen=True)
class DetectedObject:
    """One object found in an image."""

    shape: str  # one of scene.SHAPES
    colour: str  # one of scene.COLOURS
    cell: tuple[int, int]  # (column, row)
    area: float  # soft area: sum of the colour's alpha over the cell's significant pixels, px
    rgb: tuple[float, float, float]  # the object's measured colour, sRGB in [0, 1]
    backdrop_rgb: tuple[float, float, float]  # the fitted backdrop's mean over the object's cell
    contrast: float  # WCAG contrast ratio of rgb against backdrop_rgb
    legibility: float  # legibility.legibility(contrast), in [0, 1]
    fit_error: float = 0.0  # mean squared template mismatch over the cell


@dataclass(frozen=True)
class BackdropAnalysis:
    """Everything the analyzer reads from one image."""

    objects: tuple[DetectedObject, ...]
    backdrop_rgb: tuple[float, float, float]  # the fitted backdrop's mean over the image, sRGB in [0, 1]
    backdrop_luminance: float  # its WCAG relative luminance
    noise: float  # estimated per-channel noise std

    @property
    def background(self) -> str:  # the world interface's name for a named background: v3 has none
        return "unnamed"


def _cells(h: int, w: int) -> list[tuple[tuple[int, int], slice, slice]]:
    out = []
    for row in range(GRID):
        for col in range(GRID):
            ys = slice(round(row * h / GRID), round((row + 1) * h / GRID))
            xs = slice(round(col * w / GRID), round((col + 1) * w / GRID))
            out.append(((col, row), ys, xs))
    return out


@lru_cache(maxsize=16)
def _templates(resolution: int) -> dict[tuple[int, int], np.ndarray]:
    """Per cell: (shapes x blurs x shifts, cell_h, cell_w) template coverage maps."""
    out = {}
    for (col, row), ys, xs in _cells(resolution, resolution):
        stack = []
        for shape in SHAPES:
            full = coverage(shape, (col, row), resolution)
            for blur in TEMPLATE_BLURS:
                b = full if blur == 0 else gaussian_blur(full[None, ..., None], blur * resolution / 32.0)[0, ..., 0]
                for dy in SHIFTS:
                    for dx in SHIFTS:
                        stack.append(np.roll(b, (dy, dx), axis=(0, 1))[ys, xs])
        out[(col, row)] = np.stack(stack)
    return out


def fit_backdrop(img: np.ndarray) -> tuple[np.ndarray, float]:
    """(the fitted backdrop, (H, W, 3); the noise level) of one image."""
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    design = np.stack([np.ones(h * w), (xx.ravel() + 0.5) / w - 0.5, (yy.ravel() + 0.5) / h - 0.5], axis=1)
    flat = img.reshape(-1, 3).astype(np.float64)
    use = np.zeros((h, w), dtype=bool)
    use[0], use[-1], use[:, 0], use[:, -1] = True, True, True, True
    use = use.ravel()
    noise = 0.0
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[use], flat[use], rcond=None)
        fit = design @ coef
        resid = np.sqrt(((flat - fit) ** 2).sum(axis=1))
        noise = float(1.4826 * np.median(resid[use]) / np.sqrt(3))
        new_use = resid < max(0.04, 3.0 * noise * np.sqrt(3))
        if new_use.sum() < 0.25 * h * w:  # a degenerate image: keep the border fit
            break
        use = new_use
    return np.clip(fit.reshape(h, w, 3), 0.0, 1.0), noise


def _analyze_one(img: np.ndarray) -> BackdropAnalysis:
    h, w, _ = img.shape
    scale = (min(h, w) / 32.0) ** 2
    bg, noise = fit_backdrop(img)
    if noise > NOISY:  # average the noise out over neighbouring pixels before reading objects
        img = gaussian_blur(img[None], DENOISE_SIGMA * min(h, w) / 32.0)[0]
        noise = noise * NOISE_AFTER_BLUR
    d = img - bg  # (H, W, 3)
    dk = PALETTE[None, None] - bg[:, :, None, :]  # (H, W, K, 3)
    dk_norm2 = np.maximum((dk**2).sum(axis=-1), 1e-6)
    alpha = np.clip((d[:, :, None, :] * dk).sum(axis=-1) / dk_norm2, 0.0, 1.0)  # (H, W, K)
    resid2 = ((d[:, :, None, :] - alpha[..., None] * dk) ** 2).sum(axis=-1)  # (H, W, K)
    dist = np.sqrt((d**2).sum(axis=-1))
    significant = dist > max(0.05, 3.0 * noise)
    templates = _templates(h) if h == w else None
    objects = []
    for cell, ys, xs in _cells(h, w):
        sig = significant[ys, xs]
        if sig.sum() < 0.25 * MIN_AREA * scale:
            continue
        k = int(np.argmin(resid2[ys, xs][sig].sum(axis=0)))
        a = alpha[ys, xs, k]
        area = float((a * sig).sum())  # significant pixels only: noise in an empty cell adds no area
        if area < MIN_AREA * scale:
            continue
        if templates is not None:
            errs = ((templates[cell] - a[None]) ** 2).mean(axis=(1, 2))
            best = int(np.argmin(errs))
            shape, err = SHAPES[best // (len(TEMPLATE_BLURS) * len(SHIFTS) ** 2)], float(errs[best])
        else:  # pragma: no cover - non-square images are refused by callers of the world
            shape, err = SHAPES[0], 0.0
        solid = a >= 0.7
        rgb = img[ys, xs][solid].mean(axis=0) if solid.any() else PALETTE[k]
        back = bg[ys, xs].reshape(-1, 3).mean(axis=0)
        ratio = float(contrast_ratio(rgb, back))
        objects.append(DetectedObject(shape, COLOUR_NAMES[k], cell, area / scale, tuple(float(v) for v in rgb),
                                      tuple(float(v) for v in back), ratio, float(legibility(ratio)), err))
    mean_bg = bg.reshape(-1, 3).mean(axis=0)
    return BackdropAnalysis(tuple(objects), tuple(float(v) for v in mean_bg),  # type: ignore[arg-type]
                            float(relative_luminance(mean_bg)), noise)


def analyze_scenes(images: Any) -> list[BackdropAnalysis]:
    """Analyse a batch of images (any layout `imaging.to_image_batch` accepts)."""
    return [_analyze_one(img) for img in to_image_batch(images).astype(np.float64)]


def analyze_scene(image: Any) -> BackdropAnalysis:
    """Analyse one image."""
    batch = to_image_batch(image)
    if batch.shape[0] != 1:
        raise AnalyzerInputError(f"analyze_scene takes one image, got a batch of {batch.shape[0]}")
    return _analyze_one(batch[0].astype(np.float64))


def scene_facts(scene: Scene, analysis: BackdropAnalysis) -> dict[str, tuple[int, int]]:
    """(correct, total) per attribute for a rendered scene: each object's shape, colour and cell (an object
    found in its cell), one count fact per image."""
    found = {d.cell: d for d in analysis.objects}
    out = {"shape": [0, 0], "colour": [0, 0], "cell": [0, 0], "count": [int(len(analysis.objects) == len(scene.objects)), 1]}
    for o in scene.objects:
        d = found.get(o.cell)
        for key, ok in (("shape", d is not None and d.shape == o.shape), ("colour", d is not None and d.colour == o.colour),
                        ("cell", d is not None)):
            out[key][0] += int(ok)
            out[key][1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def _condition(images: np.ndarray, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "blur":
        return gaussian_blur(images, level)
    if kind == "noise":
        return np.clip(images + rng.normal(0.0, level, images.shape), 0.0, 1.0)
    return images


def analyzer_check(n: int = 500, seed: int = 0) -> dict[str, Any]:
    """Accuracy per attribute (shape, colour, cell, count) on `n` rendered scenes, clean and under blur and
    noise, and the error of the backdrop's relative luminance; also the objects' legibility against the truth."""
    sampler = SceneSampler(seed, "any")
    scenes = [sampler.sample() for _ in range(n)]
    clean = np.stack([render(s) for s in scenes]).astype(np.float64)
    rng = np.random.default_rng(seed)
    conditions: dict[str, Any] = {}
    t0 = time.perf_counter()
    for name, kind, level in (("clean", "none", 0.0), ("blur_0.5", "blur", 0.5), ("blur_0.8", "blur", 0.8),
                              ("noise_0.03", "noise", 0.03), ("noise_0.06", "noise", 0.06)):
        images = _condition(clean, kind, level, rng)
        analyses = analyze_scenes(images)
        totals: dict[str, list[int]] = {}
        lum_err, leg_err = [], []
        for scene, analysis in zip(scenes, analyses, strict=True):
            for key, (c, t) in scene_facts(scene, analysis).items():
                totals.setdefault(key, [0, 0])
                totals[key][0] += c
                totals[key][1] += t
            lum_err.append(abs(analysis.backdrop_luminance - float(relative_luminance(scene.backdrop.rgb()))))
            found = {d.cell: d for d in analysis.objects}
            for o in scene.objects:
                if o.cell in found:
                    truth = legibility(contrast_ratio(np.asarray(COLOURS[o.colour]) / 255.0, scene.backdrop.rgb()))
                    leg_err.append(abs(found[o.cell].legibility - float(truth)))
        acc = {k: c / t for k, (c, t) in totals.items()}
        conditions[name] = {**acc, "attribute_accuracy": min(acc.values()),
                            "backdrop_luminance_abs_error": float(np.mean(lum_err)),
                            "legibility_abs_error": float(np.mean(leg_err)) if leg_err else 0.0}
    return {"world": "backdrops", "n": n, "seed": seed, "conditions": conditions,
            "min_attribute_accuracy": min(c["attribute_accuracy"] for c in conditions.values()),
            "seconds": round(time.perf_counter() - t0, 1)}
