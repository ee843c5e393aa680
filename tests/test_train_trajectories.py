"""Evaluation writes trajectory grids (PNG + JSON) under the run directory and to the trackers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from promptloop.train import PromptLoopTrainer, load_config
from promptloop.train.trajectories import log_trajectory_grid


def test_eval_writes_trajectory_grid_and_json(tmp_path: Path) -> None:
    cfg = load_config(None, [
        f"output_dir={tmp_path}", "pipeline.name_or_path=tiny:sd", "policy.name_or_path=tiny:llava",
        "pipeline.num_inference_steps=3", "loop.num_refinements=2", "grpo.queries_per_step=1",
        "grpo.num_generations=2", "grpo.beta=0.0", "rewards={proxy: 1.0}", "data.train=world:train",
        "data.eval=world:heldout", "eval.every=1", "eval.num_queries=2", "eval.trajectories=2", "logging.progress_bar=false",
        "logging.run_name=my-run", "logging.tags=[a, b]",
    ])
    trainer = PromptLoopTrainer(cfg)
    metrics = trainer.evaluate()
    png, js = tmp_path / "trajectories" / "step_000000.png", tmp_path / "trajectories" / "step_000000.json"
    assert png.is_file() and js.is_file()
    record = json.loads(js.read_text())
    assert record["step"] == 0 and len(record["trajectories"]) == 2
    first = record["trajectories"][0]
    assert len(first["refinements"]) == 2 and all(r["prompt"] for r in first["refinements"])
    assert abs(first["rewards"]["proxy"] - metrics["eval/proxy/mean"]) < 1.0
    grid = np.asarray(Image.open(png))
    assert grid.shape[0] > 2 * 128 and grid.shape[1] >= 3 * 128  # 2 rows of (2 previews + final image)
    assert grid.std() > 0

    class Recorder:
        name = "tensorboard"

        def __init__(self) -> None:
            self.calls: list[tuple[dict, int, dict]] = []

        def log_images(self, values: dict, step: int, **kw: object) -> None:
            self.calls.append((values, step, kw))

    rec = Recorder()
    accel = type("A", (), {"trackers": [rec]})()
    assert log_trajectory_grid(accel, png, 5) == ["tensorboard"]
    (values, step, kw), = rec.calls
    assert step == 5 and kw == {"dataformats": "NHWC"} and values["eval/trajectories"].shape == (1, *grid.shape)
