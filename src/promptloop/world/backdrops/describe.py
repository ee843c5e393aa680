"""What the Backdrops world's analyzer reads in an image, worded for people (the world interface's `describe` hooks).

World v3's reward depends on something no caption names: the backdrop the noise chose, and how far each object
stands out from it. The app shows that next to the query's facts, through the world interface (the package's
`DESCRIBE` names this module; the app never names the package):

- `describe(image, query)`: rows (what, reading) for a final image: the backdrop (its sRGB colour, value and
  WCAG relative luminance, dark or light), the palette colour most legible on it, each object the analyzer found
  with its measured colour, its WCAG contrast ratio against the backdrop around it and its legibility, and, for a
  query of the world's grammar, the task reward's parts: alignment, legibility (the mean over the query's matched
  objects) and `backdrops_legible` = alignment x legibility, computed by the reward itself on the same analysis.
- `describe_preview(image)`: one line on the backdrop an x0 preview shows, which is what a refinement policy of
  this world reads in it (the backdrop fit alone: cheap, and a blurry preview's objects need not be readable yet).

A backdrop is called dark where white stands out more from it than black does (WCAG contrast), light otherwise:
the crossover is the relative luminance sqrt(1.05 x 0.05) - 0.05 = 0.179.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from promptloop.world.backdrops import TASK_REWARD
from promptloop.world.backdrops.analyzer import BackdropAnalysis, DetectedObject, analyze_scene, fit_backdrop
from promptloop.world.backdrops.legibility import best_colour, relative_luminance
from promptloop.world.backdrops.rewards import BackdropsLegibleReward, parse_backdrops_query
from promptloop.world.imaging import to_image_batch

DARK_LIGHT_LUMINANCE = math.sqrt(1.05 * 0.05) - 0.05  # below: white contrasts more than black (WCAG)


def tone(rgb: Any) -> str:
    """'dark' or 'light': which of white and black stands out more from an sRGB colour in [0, 1]."""
    return "dark" if float(relative_luminance(rgb)) < DARK_LIGHT_LUMINANCE else "light"


def colour_text(rgb: Any) -> str:
    """An sRGB colour in [0, 1] as '#rrggbb (value v, luminance L)': hex, the mean of its channels, its WCAG
    relative luminance."""
    c = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    hexa = "#" + "".join(f"{round(float(v) * 255):02x}" for v in c)
    return f"{hexa} (value {float(c.mean()):.2f}, luminance {float(relative_luminance(c)):.3f})"


def _one_image(image: Any) -> np.ndarray:
    """One (H, W, 3) float64 image in [0, 1] from any layout the analyzer accepts (a PIL image included)."""
    batch = to_image_batch(image)
    if batch.shape[0] != 1:
        raise ValueError(f"describe takes one image, got a batch of {batch.shape[0]}")
    return batch[0].astype(np.float64)


def object_rows(analysis: BackdropAnalysis) -> list[tuple[str, str]]:
    """One row per detected object: what and where, its colour, contrast against the backdrop around it,
    legibility."""
    return [(_object_name(d), f"colour {colour_text(d.rgb)}; contrast {d.contrast:.2f}:1 against its backdrop "
                              f"{colour_text(d.backdrop_rgb).split(' ')[0]}; legibility {d.legibility:.2f}")
            for d in analysis.objects]


def _object_name(d: DetectedObject) -> str:
    return f"{d.colour} {d.shape} at column {d.cell[0]}, row {d.cell[1]}"


def reward_rows(query: str, analysis: BackdropAnalysis) -> list[tuple[str, str]]:
    """The task reward's parts for `query` on an analysed image (one row saying why not, for a query outside the
    world's grammar)."""
    try:
        parsed = parse_backdrops_query(query)
    except ValueError:
        return [(TASK_REWARD, "not a query of this world's grammar: no reward")]
    out = BackdropsLegibleReward().from_analyses([parsed], [analysis])
    alignment, legible = float(out.breakdown["alignment"][0]), float(out.breakdown["legibility"][0])
    return [("alignment", f"{alignment:.3f}"),
            ("legibility", f"{legible:.3f} (mean over the query's {len(parsed.objects)} object"
                           f"{'s' if len(parsed.objects) != 1 else ''}; 0 for one not found)"),
            (TASK_REWARD, f"{float(out.scores[0]):.3f} = alignment x legibility")]


def describe(image: Any, query: str | None = None) -> list[tuple[str, str]]:
    """Rows (what, reading) of what the analyzer reads in a final image: backdrop, most legible colour on it,
    each object's colour, contrast and legibility, then (with a query) the task reward's parts."""
    analysis = analyze_scene(_one_image(image))
    backdrop = analysis.backdrop_rgb
    rows = [("backdrop", f"{colour_text(backdrop)}, {tone(backdrop)}"),
            ("most legible colour on it", best_colour(backdrop))]
    rows += object_rows(analysis) or [("objects", "none found")]
    if query is not None:
        rows += reward_rows(query, analysis)
    return rows


def describe_preview(image: Any) -> str:
    """One line on the backdrop an x0 preview shows (what a refinement policy of this world reads)."""
    fitted, _ = fit_backdrop(_one_image(image))
    backdrop = fitted.reshape(-1, 3).mean(axis=0)
    return f"backdrop {colour_text(backdrop)}, {tone(backdrop)}"


__all__ = ["DARK_LIGHT_LUMINANCE", "colour_text", "describe", "describe_preview", "object_rows", "reward_rows", "tone"]
