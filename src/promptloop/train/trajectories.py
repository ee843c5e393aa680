"""Trajectory grids of an evaluation: PNG + JSON under the run directory, and images to the trackers.

One row per trajectory: each refinement's x0 preview (the image the policy saw) labelled with the
sampling progress and the prompt it chose, then the final image labelled with its reward and the
original query. `save_trajectory_grid` writes ``OUTPUT_DIR/trajectories/step_NNNNNN.png`` and a
``.json`` beside it with the same content as text; `log_trajectory_grid` sends the PNG to every
Accelerate tracker (TensorBoard ``add_images``, W&B ``wandb.Image``, trackio ``trackio.Image``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptloop.eval.figures import labelled_grid
from promptloop.fs_errors import atomic_write

GRID_KEY = "eval/trajectories"


def trajectory_records(batch: Any, scores: dict[str, torch.Tensor], limit: int) -> list[dict[str, Any]]:
    """JSON-ready records of the first `limit` trajectories: query, final reward(s), each refinement."""
    out = []
    for i, traj in enumerate(batch.trajectories[:limit]):
        out.append({
            "query": batch.queries[i],
            "rewards": {k: float(v[i]) for k, v in scores.items()},
            "refinements": [{"step": int(r.step), "progress": round(float(r.progress), 4), "prompt": r.prompt,
                             "fallback": bool(r.fallback)} for r in traj.refinements],
        })
    return out


def save_trajectory_grid(
    batch: Any, scores: dict[str, torch.Tensor], output_dir: str | Path, step: int, limit: int = 4, cell: int = 128
) -> tuple[Path, Path] | None:
    """Write the grid PNG and its JSON for the first `limit` trajectories; None if there are none."""
    records = trajectory_records(batch, scores, limit)
    if not records:
        return None
    key = "total" if "total" in scores else next(iter(scores), None)
    columns = 1 + max(len(t.refinements) for t in batch.trajectories[:limit])
    images: list[Any] = []
    labels: list[str] = []
    for i, (traj, rec) in enumerate(zip(batch.trajectories[:limit], records, strict=True)):
        cells = [(r.preview, f"{r.progress:.2f}: {r.prompt}") for r in traj.refinements]
        cells += [(None, "")] * (columns - 1 - len(cells))
        reward = f"{key}={rec['rewards'][key]:.3f}: " if key is not None else ""
        cells.append((batch.images[i], reward + rec["query"]))
        for img, label in cells:
            images.append(img if img is not None else np.full((cell, cell, 3), 255, dtype=np.uint8))
            labels.append(label)
    base = Path(output_dir) / "trajectories" / f"step_{step:06d}"
    png = labelled_grid(images, labels, base.with_suffix(".png"), columns=columns, cell=cell)
    js = base.with_suffix(".json")
    text = json.dumps({"step": step, "reward_key": key, "trajectories": records}, indent=1)
    atomic_write(js, lambda tmp: tmp.write_text(text))
    return png, js


def log_trajectory_grid(accelerator: Any, png: str | Path, step: int) -> list[str]:
    """Send the grid PNG to each tracker of `accelerator`; returns the names of those that took it."""
    from PIL import Image

    arr = np.asarray(Image.open(png).convert("RGB"))
    done = []
    for tracker in getattr(accelerator, "trackers", []):
        name = getattr(tracker, "name", "")
        if name == "tensorboard":
            tracker.log_images({GRID_KEY: arr[None]}, step=step, dataformats="NHWC")
        elif name == "wandb":
            import wandb

            tracker.log({GRID_KEY: wandb.Image(arr)}, step=step)
        elif name == "trackio":
            import trackio

            tracker.log({GRID_KEY: trackio.Image(arr)}, step=step)
        else:
            continue
        done.append(name)
    return done


__all__ = ["GRID_KEY", "log_trajectory_grid", "save_trajectory_grid", "trajectory_records"]
