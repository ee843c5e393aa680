"""`promptloop demo`: the main job on the embedded Shapes world.

Samples backbone A on heldout queries with fixed seeds, scores each image with the alignment reward
and writes `outputs/demo/base_grid.png` (the analyzer's verdict under each image), `summary.json`
and `report.md`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from promptloop.eval.figures import labelled_grid
from promptloop.eval.sampling import sample
from promptloop.rewards import get_reward
from promptloop.world.analyzer import analyze_batch
from promptloop.world.backbone import load_backbone
from promptloop.world.prompts import sample_prompts


def _verdict(objects: list[Any], score: float) -> str:
    seen = ", ".join(f"{o.size} {o.colour} {o.shape}" for o in objects) or "nothing"
    return f"{score:.2f} | saw: {seen}"


def run_demo(out_dir: str = "outputs/demo", quick: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 16 if quick else 64
    steps, guidance = 20, 4.0
    pipe = load_backbone()
    reward = get_reward("alignment")
    summary: dict[str, Any] = {"steps": steps, "guidance": guidance}
    for split in ("train", "heldout"):
        items = sample_prompts(split, n, seed=0)
        queries = [it.caption for it in items]
        batch = sample(pipe, queries, list(range(n)), steps=steps, guidance=guidance, desc=f"demo {split}")
        r = reward(batch.images, queries)
        scores = r.scores.numpy()
        summary[f"base_{split}"] = float(scores.mean())
        summary[f"base_full_correct_{split}"] = float((scores >= 1 - 1e-6).mean())
        if split == "heldout":
            summary["base"] = float(scores.mean())
        k = min(24, n)
        labels = [f"{q} -> {_verdict(objs, s)}" for q, objs, s in zip(queries[:k], analyze_batch(batch.images[:k]), scores[:k], strict=True)]
        labelled_grid(list(batch.images[:k]), labels, out / f"base_grid_{split}.png", columns=6, cell=128, wrap=24, lines=7)
    summary["seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "# PromptLoop demo (embedded Shapes world)",
        "",
        f"Backbone A, {steps} DDIM steps, CFG {guidance}, fixed seeds, {n} queries per split.",
        "",
        "| split | mean alignment | fully correct |",
        "|---|---|---|",
    ]
    for split in ("train", "heldout"):
        lines.append(f"| {split} | {summary[f'base_{split}']:.3f} | {summary[f'base_full_correct_{split}']:.3f} |")
    lines += ["", "Grids: `base_grid_train.png`, `base_grid_heldout.png` (score | what the analyzer saw).", ""]
    (out / "report.md").write_text("\n".join(lines))
    np.save(out / "scores.npy", np.asarray([summary["base_train"], summary["base_heldout"]]))
    return summary
