"""PNG figures: labelled image grids, trajectory strips and reward curves (each written whole or not at all)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from promptloop.fs_errors import atomic_write


def _to_pil(img: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def labelled_grid(
    images: Sequence[np.ndarray | Image.Image],
    labels: Sequence[str],
    path: str | Path,
    columns: int = 8,
    cell: int = 128,
    wrap: int = 22,
    lines: int = 5,
    row_titles: Sequence[str] | None = None,
) -> Path:
    """Save images (upscaled to `cell` px, nearest) in a grid with a wrapped label under each."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images for {len(labels)} labels")
    font = ImageFont.load_default()
    line_h = 11
    label_h = lines * line_h + 4
    title_w = 90 if row_titles else 0
    rows = (len(images) + columns - 1) // columns
    canvas = Image.new("RGB", (title_w + columns * (cell + 4), rows * (cell + label_h + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (img, label) in enumerate(zip(images, labels, strict=True)):
        r, c = divmod(k, columns)
        x, y = title_w + c * (cell + 4), r * (cell + label_h + 4)
        canvas.paste(_to_pil(img).resize((cell, cell), Image.NEAREST), (x, y))
        wrapped = textwrap.wrap(label, wrap)[:lines]
        for j, line in enumerate(wrapped):
            draw.text((x + 1, y + cell + 2 + j * line_h), line, fill="black", font=font)
    if row_titles:
        for r, title in enumerate(row_titles[:rows]):
            for j, line in enumerate(textwrap.wrap(title, 14)[:4]):
                draw.text((2, r * (cell + label_h + 4) + cell // 2 + j * line_h), line, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, canvas.save)


def _line_plot(path: str | Path, draw: Callable[[Any], None], xlabel: str, ylabel: str, title: str,
               title_size: float | None = None, legend_size: float | None = None) -> Path:
    """A 6 x 3.5 in line plot: `draw(ax)` adds the lines; labels, grid and legend, then written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    draw(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=title_size)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, fig.savefig)
    finally:
        plt.close(fig)
    return path


def reward_curve(steps: Sequence[int], series: dict[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
    """A line plot of one or more reward series against training steps."""
    def draw(ax: Any) -> None:
        for name, ys in series.items():
            ax.plot(list(steps)[: len(ys)], list(ys), label=name)

    return _line_plot(path, draw, "GRPO step", "reward", title)


def curve_with_bands(series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]],
                     path: str | Path, xlabel: str, ylabel: str = "reward", title: str = "",
                     marker: str | None = "o") -> Path:
    """Lines with shaded 95 % CI bands: `series` maps a label to (x, mean, ci_low, ci_high)."""
    def draw(ax: Any) -> None:
        for name, (xs, ys, lo, hi) in series.items():
            line = ax.plot(list(xs), list(ys), label=name, marker=marker, markersize=3)[0]
            ax.fill_between(list(xs), list(lo), list(hi), color=line.get_color(), alpha=0.2, linewidth=0)

    return _line_plot(path, draw, xlabel, ylabel, title, title_size=9, legend_size=8)
