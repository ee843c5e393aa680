"""Classical-CV analyzer of Shapes-world images (numpy only): image -> detected objects.

Pipeline, per image (all lengths scale with the resolution; figures below are for 32 px):

1. **Background.** The median of the border pixels is the background estimate (used for all
   unmixing); its nearest named background (`scene.BACKGROUNDS`) is reported. The noise level is the
   median absolute deviation of the border pixels around that median.
2. **Unmixing.** Every pixel ``p`` is explained, for each palette colour ``c``, as
   ``bg + alpha * (c - bg)``: ``alpha`` is the projection of ``p - bg`` on ``c - bg`` (clipped to
   [0, 1]) and the residual is the distance of ``p`` from that line segment. A pixel's label is the
   colour of least residual, its coverage the matching ``alpha``.
3. **Components.** Core pixels (coverage >= 0.5, significantly off the background) are grouped into
   8-connected components of equal colour label (a small iterative min-label propagation in numpy).
   Fragments too small to be an object that touch a bigger component are merged into it (noisy edge
   pixels), then a one-pixel ring of weaker pixels is attached to its neighbouring component. Each
   component's colour is the palette colour of least summed squared residual over its pixels, which
   also splits touching objects of different colours. Components whose soft area (sum of coverage) is
   below a quarter of the smallest object's area are specks and dropped.
4. **Shaded objects.** A generated object's colour often drifts across it (an orange disc with a
   red rim), so step 3 splits it into touching components of two colour labels. Two touching
   components are merged when one shape template (step 5) explains their union with less error than
   two templates explain them apart; two distinct objects that touch (large ones in adjacent cells)
   fit two templates far better than one and stay apart.
5. **Shape and size** by template fitting: the component's soft coverage map is compared (sum of
   squared differences) with the renderer's own coverage of each of the 4 shapes x 2 sizes, placed at
   the component's centroid (corrected for the shape's own centroid offset: a triangle's mass sits
   below its centre) and blurred with a Gaussian of sigma 0, 0.6 or 1.0 px, so blurred images are
   matched too. The best template gives shape and size; its centre gives the cell
   (``centre // (size / 3)``).

Its accuracy on clean and degraded renders is `analyzer_accuracy.analyzer_check`'s (`promptloop world
analyzer-check`; the figures are in docs/worlds.md).

The analyzer never raises on odd image *content* (it returns what it finds, possibly nothing); it
raises `AnalyzerInputError` on malformed *input* (shape, dtype, NaN, range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from promptloop.world.imaging import (  # noqa: F401  (re-exported)
    AnalyzerInputError,
    _blur2d,
    _neighbours8,
    gaussian_blur,
    label_components,
    round_trip_accuracy,
    to_image_batch,
)
from promptloop.world.shapes.render import shape_mask
from promptloop.world.shapes.scene import BACKGROUNDS, COLOURS, GRID, SHAPES, SIZE_RADIUS, SIZES

COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)
PALETTE = np.asarray([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float64) / 255.0  # (8, 3)
BACKGROUND_PALETTE = np.asarray([BACKGROUNDS[b] for b in BACKGROUND_NAMES], dtype=np.float64) / 255.0  # (3, 3)

CORE_ALPHA = 0.5  # coverage above which a pixel seeds a component
TEMPLATE_BLURS: tuple[float, ...] = (0.0, 0.6, 1.0)  # template blur sigmas, in px of a 32 px image
MAX_DETECTIONS = 9  # at most one object per grid cell is plausible; keep the largest
_SUBPIXEL = 16  # template centres are quantised to 1/_SUBPIXEL px (cache key)


@dataclass(frozen=True)
class DetectedObject:
    """One object found in an image."""

    shape: str  # one of scene.SHAPES
    colour: str  # one of scene.COLOURS
    size: str  # one of scene.SIZES
    cell: tuple[int, int]  # (column, row) on the GRID x GRID lattice
    centroid: tuple[float, float]  # coverage-weighted centroid (x, y) in pixels
    area: float  # soft area: sum of the per-pixel coverage, in pixels
    fit_error: float = 0.0  # mean squared template mismatch per template pixel (0 = perfect)


@dataclass(frozen=True)
class Analysis:
    """Everything the analyzer reads from one image."""

    objects: tuple[DetectedObject, ...]
    background: str  # nearest named background to the border median
    background_rgb: tuple[float, float, float]  # the border median itself, in [0, 1]
    noise: float  # estimated per-channel noise std, in [0, 1] units


# ----------------------------------------------------------------------------- templates


@lru_cache(maxsize=64)
def _centroid_offset(shape: str, radius: float) -> tuple[float, float]:
    """Offset (dx, dy) of a shape's area centroid from its nominal centre."""
    g = (np.arange(400) + 0.5) / 400 * 4 * radius - 2 * radius
    x, y = np.meshgrid(g, g)
    m = shape_mask(shape, x, y, 0.0, 0.0, radius)
    return float(x[m].mean()), float(y[m].mean())


def _template(shape: str, radius: float, blur: float, half: int, qx: int, qy: int) -> np.ndarray:
    """Coverage of a shape on a (2*half+1)^2 window whose centre pixel's corner is at (0, 0).

    The shape's centre sits at (half + qx / _SUBPIXEL, half + qy / _SUBPIXEL) in window pixels.
    """
    s = 4
    n = 2 * half + 1
    coords = (np.arange(n * s, dtype=np.float64) + 0.5) / s
    x, y = np.meshgrid(coords, coords)
    m = shape_mask(shape, x, y, half + qx / _SUBPIXEL, half + qy / _SUBPIXEL, radius).astype(np.float64)
    cov = m.reshape(n, s, n, s).mean(axis=(1, 3))
    if blur > 0:
        cov = _blur2d(cov, blur)
    cov.setflags(write=False)
    return cov


@lru_cache(maxsize=4096)
def _template_stack(shape: str, radius: float, half: int, qx: int, qy: int, scale: float) -> np.ndarray:
    """The templates of every blur in TEMPLATE_BLURS (in that order), stacked: (len(TEMPLATE_BLURS), n, n).

    The one cache of templates: `_template` itself is only called from here."""
    out = np.stack([_template(shape, radius, round(b * scale, 6), half, qx, qy) for b in TEMPLATE_BLURS])
    out.setflags(write=False)
    return out


# ----------------------------------------------------------------------------- analysis


def _background(img: np.ndarray) -> tuple[np.ndarray, str, float]:
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]], axis=0)
    med = np.median(border, axis=0)
    name = BACKGROUND_NAMES[int(np.argmin(((BACKGROUND_PALETTE - med) ** 2).sum(axis=1)))]
    noise = float(1.4826 * np.median(np.abs(border - med)))
    return med, name, noise


def analyze_array(img: np.ndarray) -> Analysis:
    """The analysis of one (H, W, 3) image in [0, 1], not checked (`analyze_scene` checks its input)."""
    h, w, _ = img.shape
    scale = min(h, w) / 32.0
    bg, bg_name, noise = _background(img)
    sigma = max(noise, 0.004)
    d = img - bg  # (H, W, 3)
    dk = PALETTE - bg  # (K, 3)
    dk_norm2 = np.maximum((dk**2).sum(axis=1), 1e-6)
    alpha = np.clip(d @ dk.T / dk_norm2, 0.0, 1.0)  # (H, W, K)
    resid2 = ((d[:, :, None, :] - alpha[..., None] * dk) ** 2).sum(axis=-1)  # (H, W, K)
    best = np.argmin(resid2, axis=-1)
    a_best = np.take_along_axis(alpha, best[..., None], axis=-1)[..., 0]
    dist = np.sqrt((d**2).sum(axis=-1))
    dk_len = np.sqrt(dk_norm2)[best]
    significant = dist > 2.5 * sigma * math.sqrt(3)
    core = (a_best >= CORE_ALPHA) & significant & (dist > 0.06)
    weak = (a_best >= np.maximum(0.05, 2.0 * sigma / dk_len)) & (dist > 2.0 * sigma)

    min_obj_area = 19.9 * scale * scale  # the small triangle, the smallest object
    speck = 0.25 * min_obj_area
    labels = label_components(np.where(core, best, -1))
    n = int(labels.max()) + 1
    if n == 0:
        return Analysis((), bg_name, tuple(float(v) for v in bg), noise)  # type: ignore[arg-type]
    areas = np.bincount(labels[labels >= 0], weights=a_best[labels >= 0], minlength=n)
    # merge small fragments into the biggest 8-adjacent component (repeat: chains of fragments)
    for _ in range(3):
        changed = False
        nbs = _neighbours8(labels, -1)
        for lab in np.argsort(areas):
            if areas[lab] >= speck or areas[lab] == 0:
                continue
            m = labels == lab
            cand = set()
            for nb in nbs:
                cand.update(int(v) for v in np.unique(nb[m]) if v >= 0 and v != lab)
            cand = {c for c in cand if areas[c] > areas[lab]}
            if cand:
                target = max(cand, key=lambda c: areas[c])
                labels[m] = target
                areas[target] += areas[lab]
                areas[lab] = 0
                changed = True
        if not changed:
            break
    keep = [lab for lab in range(n) if areas[lab] >= speck]
    if not keep:
        return Analysis((), bg_name, tuple(float(v) for v in bg), noise)  # type: ignore[arg-type]
    keep = sorted(keep, key=lambda lab: -areas[lab])[:MAX_DETECTIONS]
    remap = np.full(n, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    comp = np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)
    # attach a one-pixel ring of weak pixels to the neighbouring component of least residual
    ring = weak & (comp < 0)
    if ring.any():
        comp_col = np.array([np.bincount(best[comp == lab], minlength=len(COLOUR_NAMES)).argmax() for lab in range(len(keep))])
        nbs = _neighbours8(comp, -1)
        cand_best = np.full((h, w), -1, dtype=np.int64)
        cand_err = np.full((h, w), np.inf)
        for nb in nbs:
            ok = ring & (nb >= 0)
            if not ok.any():
                continue
            # residual of this pixel under the neighbour component's current label colour
            ys, xs = np.nonzero(ok)
            labs = nb[ys, xs]
            err = resid2[ys, xs, comp_col[labs]]
            better = err < cand_err[ys, xs]
            cand_best[ys[better], xs[better]] = labs[better]
            cand_err[ys[better], xs[better]] = err[better]
        comp = np.where(cand_best >= 0, cand_best, comp)

    comp = _merge_shaded_fragments(comp, a_best, scale)

    objects: list[DetectedObject] = []
    claimed = comp >= 0
    for lab in range(int(comp.max()) + 1):
        m = comp == lab
        ys, xs = np.nonzero(m)
        k = int(np.argmin(resid2[ys, xs].sum(axis=0)))
        a = alpha[:, :, k]
        wts = a[ys, xs]
        area = float(wts.sum())
        if area < speck:
            continue
        cx = float(((xs + 0.5) * wts).sum() / area)
        cy = float(((ys + 0.5) * wts).sum() / area)
        # observed coverage around the object: own pixels plus unclaimed pixels nearby
        obs_full = np.where(m | ~claimed, a, 0.0)
        shape, size, centre, err = _fit_template(obs_full, cx, cy, scale)
        col = int(min(GRID - 1, max(0, centre[0] // (w / GRID))))
        row = int(min(GRID - 1, max(0, centre[1] // (h / GRID))))
        objects.append(DetectedObject(shape, COLOUR_NAMES[k], size, (col, row), (cx, cy), area, err))
    return Analysis(tuple(objects), bg_name, tuple(float(v) for v in bg), noise)  # type: ignore[arg-type]


def _union_fit_error(comp: np.ndarray, members: tuple[int, ...], coverage: np.ndarray, scale: float) -> float:
    """Template-fit error of one object made of the components `members` (unclaimed pixels count too)."""
    m = np.isin(comp, members)
    w = coverage * m
    ys, xs = np.nonzero(m)
    area = float(w[ys, xs].sum())
    cx = float(((xs + 0.5) * w[ys, xs]).sum() / area)
    cy = float(((ys + 0.5) * w[ys, xs]).sum() / area)
    return _fit_template(np.where(m | (comp < 0), coverage, 0.0), cx, cy, scale)[3]


def _merge_shaded_fragments(comp: np.ndarray, coverage: np.ndarray, scale: float) -> np.ndarray:
    """Merge touching components that are one shaded object split by colour label (step 4).

    A generated object's colour often drifts across it (an orange disc with a red rim): its pixels
    then get two colour labels and form two touching components. Two touching components are merged
    when one shape template explains their union better than two templates explain them apart
    (summed template error); two distinct touching objects fit two templates far better than one.
    Repeats until no pair merges. Labels are renumbered 0..K-1.
    """
    while comp.max() >= 1:
        pairs: set[tuple[int, int]] = set()
        for nb in _neighbours8(comp, -1):
            touch = (comp >= 0) & (nb >= 0) & (nb != comp)
            pairs.update((int(min(p, q)), int(max(p, q))) for p, q in zip(comp[touch], nb[touch], strict=True))
        if not pairs:
            return comp
        fits = {(lab,): _union_fit_error(comp, (lab,), coverage, scale) for pair in pairs for lab in pair}
        gains = [
            (fits[(p,)] + fits[(q,)] - _union_fit_error(comp, (p, q), coverage, scale), p, q) for p, q in sorted(pairs)
        ]
        gain, p, q = max(gains)
        if gain <= 0:
            return comp
        comp = np.where(comp == q, p, comp)
        _, inv = np.unique(comp[comp >= 0], return_inverse=True)
        comp[comp >= 0] = inv
    return comp


def _fit_template(obs_full: np.ndarray, cx: float, cy: float, scale: float) -> tuple[str, str, tuple[float, float], float]:
    """Best (shape, size) template for the coverage map around centroid (cx, cy)."""
    h, w = obs_full.shape
    half = int(math.ceil(max(SIZE_RADIUS.values()) * 1.1 * scale + 3 * max(TEMPLATE_BLURS) * scale + 1))
    best: tuple[float, str, str, tuple[float, float]] | None = None
    for shape in SHAPES:
        for size in SIZES:
            r = SIZE_RADIUS[size] * scale
            ox, oy = _centroid_offset(shape, r)
            ex, ey = cx - ox, cy - oy  # the shape's centre
            ix, iy = int(math.floor(ex)), int(math.floor(ey))
            qx = int(round((ex - ix) * _SUBPIXEL))
            qy = int(round((ey - iy) * _SUBPIXEL))
            # window pixels [iy-half, iy+half] x [ix-half, ix+half], cropped to the image
            y0, y1 = iy - half, iy + half + 1
            x0, x1 = ix - half, ix + half + 1
            cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
            obs = obs_full[cy0:cy1, cx0:cx1]
            # every blur at once; the first blur of least error, as a loop over TEMPLATE_BLURS would pick
            t = _template_stack(shape, round(r, 6), half, qx, qy, scale)[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
            err = float(((obs - t) ** 2).sum(axis=(1, 2)).min())
            if best is None or err < best[0]:
                best = (err, shape, size, (ex, ey))
    assert best is not None
    n_pix = (2 * half + 1) ** 2
    return best[1], best[2], best[3], best[0] / n_pix


def analyze_scene(image: Any) -> Analysis:
    """Analyze one image: objects, background and noise level. See the module docstring."""
    batch = to_image_batch(image)
    if batch.shape[0] != 1:
        raise AnalyzerInputError(f"analyze_scene takes one image, got a batch of {batch.shape[0]}; use analyze_batch")
    return analyze_array(batch[0])


def analyze_scenes(images: Any) -> list[Analysis]:
    """Analyze a batch of images (any input accepted by `to_image_batch`)."""
    batch = to_image_batch(images)
    return [analyze_array(img) for img in batch]


def analyze(image: Any) -> list[DetectedObject]:
    """The objects found in one image (numpy (H, W, 3), torch (3, H, W), PIL, or a batch of one)."""
    return list(analyze_scene(image).objects)


def analyze_batch(images: Any) -> list[list[DetectedObject]]:
    """The objects found in each image of a batch (numpy (N, H, W, 3), torch (N, 3, H, W), list)."""
    return [list(a.objects) for a in analyze_scenes(images)]


__all__ = [
    "Analysis",
    "AnalyzerInputError",
    "DetectedObject",
    "analyze",
    "analyze_batch",
    "analyze_scene",
    "analyze_array",
    "analyze_scenes",
    "gaussian_blur",
    "label_components",
    "to_image_batch",
]
