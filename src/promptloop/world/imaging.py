"""Image helpers shared by the worlds' analyzers (numpy only): input checking, blur, connected components,
and the round-trip scoring of an analyzer against the scenes it was given.

`to_image_batch` reads what rewards and analyzers are given (numpy, torch, PIL; NHWC or NCHW; uint8 or
float in [0, 1] or [-1, 1]) and refuses malformed input with `AnalyzerInputError`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MIN_SIDE = 12  # smallest accepted image side, in pixels
RANGE_TOLERANCE = 1e-4  # float inputs may overshoot [0, 1] by this much (then clipped)


class AnalyzerInputError(ValueError):
    """An image (or batch) the analyzer cannot read: wrong type, shape, dtype, NaN or range."""


# ----------------------------------------------------------------------------- input handling


def _check_array(arr: np.ndarray, layout: str) -> np.ndarray:
    """Validate a (N, H, W, 3) array (after layout conversion) and return it as float64 in [0, 1]."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.floating):
        raise AnalyzerInputError(
            f"unsupported image dtype {arr.dtype}: expected uint8 (0..255) or floating point (0..1) {layout} data"
        )
    out = arr.astype(np.float64)
    if out.size == 0:
        return out
    if not np.isfinite(out).all():
        n_nan = int(np.isnan(out).sum())
        n_inf = int(np.isinf(out).sum())
        raise AnalyzerInputError(f"image contains non-finite values ({n_nan} NaN, {n_inf} inf)")
    lo, hi = float(out.min()), float(out.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        hint = " (looks like 0..255 data: pass uint8 or divide by 255)" if hi > 1.5 else ""
        hint = hint or (" (looks like -1..1 data: map with (x + 1) / 2)" if lo < -0.5 else "")
        raise AnalyzerInputError(f"float image values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]{hint}")
    return np.clip(out, 0.0, 1.0)


def _check_hw(arr: np.ndarray) -> None:
    _, h, w, _ = arr.shape
    if h < MIN_SIDE or w < MIN_SIDE:
        raise AnalyzerInputError(f"image of {h}x{w} pixels is too small: each side must be at least {MIN_SIDE}")


def _pil_to_array(img: Any) -> np.ndarray:
    mode = img.mode
    if mode not in ("RGB", "RGBA", "L", "P", "LA"):
        raise AnalyzerInputError(f"unsupported PIL image mode {mode!r}: expected RGB, RGBA, L or P")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _torch_to_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.uint8:
        return t.numpy()
    if not t.is_floating_point():
        raise AnalyzerInputError(f"unsupported tensor dtype {t.dtype}: expected uint8 or a floating point dtype")
    return t.to(torch.float64).numpy()


def to_image_batch(images: Any) -> np.ndarray:
    """Convert any accepted image input to a validated float64 array (N, H, W, 3) in [0, 1].

    Accepted: numpy (H, W, 3) or (N, H, W, 3), float in [0, 1] or uint8; torch (3, H, W) or
    (N, 3, H, W), float in [0, 1] or uint8; a PIL image; a list/tuple of any single images of one
    size. Raises `AnalyzerInputError` with a specific message otherwise.
    """
    if isinstance(images, np.ndarray):
        arr = images
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise AnalyzerInputError(
                f"numpy images must have shape (H, W, 3) or (N, H, W, 3), got {arr.ndim} dims {tuple(images.shape)}"
            )
        if arr.shape[-1] != 3:
            hint = " (channels-first? numpy input must be channels-last)" if arr.shape[1] == 3 else ""
            raise AnalyzerInputError(f"numpy images need 3 channels in the last axis, got shape {tuple(images.shape)}{hint}")
        out = _check_array(arr, "(N, H, W, 3)")
        _check_hw(out)
        return out
    if _is_torch(images):
        t = images
        shape = tuple(t.shape)
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4:
            raise AnalyzerInputError(f"torch images must have shape (3, H, W) or (N, 3, H, W), got {len(shape)} dims {shape}")
        if t.shape[1] != 3:
            hint = " (channels-last? torch input must be channels-first)" if t.shape[-1] == 3 else ""
            raise AnalyzerInputError(f"torch images need 3 channels in dim 1, got shape {shape}{hint}")
        arr = _torch_to_numpy(t).transpose(0, 2, 3, 1)
        out = _check_array(arr, "(N, 3, H, W)")
        _check_hw(out)
        return out
    if hasattr(images, "convert") and hasattr(images, "mode"):  # a PIL image
        return to_image_batch(_pil_to_array(images))
    if isinstance(images, (list, tuple)):
        if not images:
            return np.zeros((0, 32, 32, 3))
        singles = []
        for i, im in enumerate(images):
            try:
                b = to_image_batch(im)
            except AnalyzerInputError as e:
                raise AnalyzerInputError(f"image {i} of the list: {e}") from e
            if b.shape[0] != 1:
                raise AnalyzerInputError(f"image {i} of the list is a batch of {b.shape[0]}; list single images")
            singles.append(b[0])
        shapes = {s.shape for s in singles}
        if len(shapes) > 1:
            raise AnalyzerInputError(f"images of one list must share a size, got {sorted(shapes)}")
        return np.stack(singles)
    raise AnalyzerInputError(
        f"unsupported image type {type(images).__name__}: expected a numpy array, torch tensor, PIL image or list"
    )


# ----------------------------------------------------------------------------- image operations


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (..., H, W, C) images with reflect padding (numpy only)."""
    if sigma <= 0:
        return images.copy()
    rad = max(1, int(math.ceil(3 * sigma)))
    xs = np.arange(-rad, rad + 1, dtype=np.float64)
    k = np.exp(-0.5 * (xs / sigma) ** 2)
    k /= k.sum()
    out = images.astype(np.float64)
    for axis in (-3, -2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (rad, rad)
        padded = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            acc += w * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return out


def _blur2d(a: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_blur(a[..., None], sigma)[..., 0]


def _neighbours8(a: np.ndarray, fill: float) -> list[np.ndarray]:
    """The 8 shifted copies of a 2-D array (value `fill` outside)."""
    h, w = a.shape
    p = np.full((h + 2, w + 2), fill, dtype=a.dtype)
    p[1:-1, 1:-1] = a
    return [p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def label_components(classes: np.ndarray) -> np.ndarray:
    """8-connected components of equal non-negative class; -1 is background. Returns labels (-1 = none).

    Iterative min-label propagation: each pixel takes the smallest label among its same-class
    neighbours until nothing changes; labels are then renumbered 0..K-1 in raster order.
    """
    h, w = classes.shape
    big = h * w + 1
    labels = np.where(classes >= 0, np.arange(h * w).reshape(h, w), big)
    cls_n = _neighbours8(classes, -1)
    same = [(c == classes) & (classes >= 0) for c in cls_n]
    while True:
        nb = _neighbours8(labels, big)
        new = labels.copy()
        for s, lab in zip(same, nb, strict=True):
            np.minimum(new, np.where(s, lab, big), out=new)
        if np.array_equal(new, labels):
            break
        labels = new
    out = np.full((h, w), -1, dtype=np.int64)
    fg = labels < big
    if fg.any():
        _, inv = np.unique(labels[fg], return_inverse=True)
        out[fg] = inv
    return out


# ----------------------------------------------------------------------------- round-trip scoring


def score_detection(truth: Sequence[Any], detected: Sequence[Any], attributes: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(correct, total) per attribute and for the count, under the assignment of true objects to detections
    (a true object may stay unmatched) that gets most attributes right."""
    slots = list(range(len(detected))) + [-1] * len(truth)
    best = [0] * len(attributes)
    for perm in set(itertools.permutations(slots, len(truth))):
        hits = [0] * len(attributes)
        for g, j in zip(truth, perm, strict=True):
            if j >= 0:
                for i, attr in enumerate(attributes):
                    hits[i] += getattr(g, attr) == getattr(detected[j], attr)
        if sum(hits) > sum(best):
            best = hits
    out = {attr: (best[i], len(truth)) for i, attr in enumerate(attributes)}
    out["count"] = (int(len(detected) == len(truth)), 1)
    return out


def round_trip_accuracy(scenes: Sequence[Any], images: np.ndarray, analyze: Callable[[np.ndarray], Any],
                        attributes: Sequence[str]) -> tuple[float, dict[str, float]]:
    """(accuracy over every attribute of every object plus each image's count, per-attribute accuracy) of an
    analyzer (`analyze(image).objects`) on images of known scenes (`scene.objects`)."""
    totals = {a: [0, 0] for a in (*attributes, "count")}
    for scene, img in zip(scenes, images, strict=True):
        for key, (c, t) in score_detection(scene.objects, analyze(img).objects, attributes).items():
            totals[key][0] += c
            totals[key][1] += t
    correct = sum(c for c, _ in totals.values())
    total = sum(t for _, t in totals.values())
    return correct / total, {k: c / t for k, (c, t) in totals.items()}
