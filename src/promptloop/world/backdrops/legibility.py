"""Legibility of an object against its backdrop: WCAG 2.x contrast, and the room it leaves (arithmetic only).

- `relative_luminance(rgb)`: WCAG 2.x relative luminance of sRGB colours in [0, 1] (the sRGB transfer
  function, then 0.2126 R + 0.7152 G + 0.0722 B).
- `contrast_ratio(a, b)`: (L_lighter + 0.05) / (L_darker + 0.05), from 1 (none) to 21 (black on white).
- `legibility(ratio)`: the fraction of the way from no contrast (1:1) to WCAG AA's 4.5:1 for normal text that a
  ratio reaches, clipped to [0, 1]: `clip((ratio - 1) / 3.5, 0, 1)`.

Why this form: a measure that one colour satisfies everywhere would leave the best colour independent of the
backdrop (WCAG's ratio lets a colour of relative luminance ~0.18 reach 4.5:1 against both black and white, and a
log-ratio capped at 7:1 rewards such a colour almost everywhere). Over this world's backdrops (sRGB value uniform
in [0.15, 0.85]) and palette, `room_arithmetic()` gives: best single colour (black) 0.723, best colour per
backdrop 0.996, a gap of 0.273; a colour drawn at random 0.465. The gap, times the share of objects whose colour
the query leaves open and the alignment the backbone reaches, bounds the room for feedback (world v3's reward is
`alignment x mean legibility`, so there is no weight below 1 in front of it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from promptloop.world.backdrops.scene import COLOURS, VALUE_MAX, VALUE_MIN

AA_RATIO = 4.5  # WCAG 2.x level AA contrast for normal text


def relative_luminance(rgb: Any) -> np.ndarray:
    """WCAG 2.x relative luminance of sRGB colours in [0, 1], shape (..., 3) -> (...)."""
    c = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin[..., 0] * 0.2126 + lin[..., 1] * 0.7152 + lin[..., 2] * 0.0722


def contrast_ratio(a: Any, b: Any) -> np.ndarray:
    """WCAG contrast ratio of sRGB colours a and b (each (..., 3) in [0, 1]), in [1, 21]."""
    la, lb = relative_luminance(a), relative_luminance(b)
    return (np.maximum(la, lb) + 0.05) / (np.minimum(la, lb) + 0.05)


def legibility(ratio: Any) -> np.ndarray:
    """clip((ratio - 1) / (AA_RATIO - 1), 0, 1)."""
    return np.clip((np.asarray(ratio, dtype=np.float64) - 1.0) / (AA_RATIO - 1.0), 0.0, 1.0)


def best_colour(backdrop_rgb: Any, colours: dict[str, tuple[int, int, int]] | None = None) -> str:
    """The palette colour most legible against a backdrop colour (sRGB in [0, 1])."""
    palette = colours or COLOURS
    names = list(palette)
    ratios = contrast_ratio(np.asarray([palette[n] for n in names], dtype=np.float64) / 255.0, np.asarray(backdrop_rgb))
    return names[int(np.argmax(ratios))]


def room_arithmetic(samples: int = 801) -> dict[str, Any]:
    """Expected legibility, over neutral backdrops with sRGB value uniform in [VALUE_MIN, VALUE_MAX], of each fixed
    palette colour, of the best fixed colour, of the best colour per backdrop and of a random colour."""
    v = np.linspace(VALUE_MIN, VALUE_MAX, samples)
    backdrops = np.stack([v, v, v], axis=-1)
    table = {name: legibility(contrast_ratio(np.asarray(rgb) / 255.0, backdrops)) for name, rgb in COLOURS.items()}
    m = np.stack(list(table.values()))
    single = {name: float(col.mean()) for name, col in table.items()}
    best_single = max(single, key=single.get)  # type: ignore[arg-type]
    per_backdrop = float(m.max(axis=0).mean())
    return {"fixed_colour": single, "best_fixed_colour": best_single, "best_fixed": single[best_single],
            "best_per_backdrop": per_backdrop, "gap": per_backdrop - single[best_single], "random_colour": float(m.mean())}
