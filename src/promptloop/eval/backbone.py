"""Quality window of a world backbone (`promptloop world backbone-eval`).

Figures (fixed seeds, `steps` DDIM steps, CFG `guidance`):
- `count_accuracy`: fraction of images (train + heldout) in which the analyzer finds exactly the
  number of objects the query asks for.
- `alignment_train` / `full_correct_train`: mean alignment and fraction of fully correct samples on
  `train` compositions; `alignment_heldout` / `full_correct_heldout` likewise on `heldout` ones.
- `preview_accuracy`: for previews decoded from the Tweedie x0 estimate at 25/50/75% of sampling,
  the analyzer's accuracy on the preview taking the final image as ground truth: for each object of
  the final image, presence at its cell, colour, shape and size (4 checks per object).
- `preview_alignment`: mean alignment of the previews themselves against the query.
- `preview_verdict_agreement`: fraction of samples whose preview and final image get the same
  fully-correct verdict (what a policy watching the preview could know about the outcome).
- `images_per_second`: plain sampling throughput (batch 64) on this machine.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from promptloop.eval.sampling import fraction_to_step, sample
from promptloop.policy.base import NullPolicy
from promptloop.rewards.world import AlignmentReward, parse_query
from promptloop.world.analyzer import Analysis, analyze_scenes
from promptloop.world.backbone import load_backbone
from promptloop.world.prompts import sample_prompts

PREVIEW_FRACTIONS = (0.25, 0.5, 0.75)


def preview_object_accuracy(previews: list[Analysis], finals: list[Analysis]) -> float:
    """Analyzer accuracy on previews with the final images' analysis as ground truth."""
    hits = total = 0
    for pv, fn in zip(previews, finals, strict=True):
        by_cell = {o.cell: o for o in pv.objects}
        for o in fn.objects:
            total += 4
            p = by_cell.get(o.cell)
            if p is not None:
                hits += 1 + (p.colour == o.colour) + (p.shape == o.shape) + (p.size == o.size)
    return hits / total if total else 1.0


def backbone_eval(backbone: str | None = None, n: int = 256, seed: int = 0, steps: int = 20, guidance: float = 4.0,
                  timing_images: int = 64) -> dict[str, Any]:
    """Measure the quality window of a backbone on `n` train and `n` heldout queries."""
    t_start = time.perf_counter()
    pipe = load_backbone(backbone)
    reward = AlignmentReward()
    refine_steps = [fraction_to_step(f, steps) for f in PREVIEW_FRACTIONS]
    result: dict[str, Any] = {"n": n, "seed": seed, "steps": steps, "guidance": guidance}
    count_hits: list[float] = []
    preview_acc: dict[str, list[float]] = {str(f): [] for f in PREVIEW_FRACTIONS}
    preview_align: dict[str, list[float]] = {str(f): [] for f in PREVIEW_FRACTIONS}
    verdict: dict[str, list[float]] = {str(f): [] for f in PREVIEW_FRACTIONS}
    for split in ("train", "heldout"):
        items = sample_prompts(split, n, seed)
        queries = [it.caption for it in items]
        seeds = [seed * 1_000_003 + i for i in range(len(items))]
        out = sample(pipe, queries, seeds, policy=NullPolicy(), mode="feedback", refinement_steps=refine_steps,
                     steps=steps, guidance=guidance, desc=f"backbone-eval {split}")
        parsed = [parse_query(q) for q in queries]
        final_analyses = analyze_scenes(out.images)  # analysed once, reused for every figure
        r = reward.from_analyses(parsed, final_analyses)
        scores = r.scores.numpy()
        result[f"alignment_{split}"] = float(scores.mean())
        result[f"full_correct_{split}"] = float((scores >= 1.0 - 1e-6).mean())
        result[f"breakdown_{split}"] = {k: float(np.nanmean(v.numpy())) for k, v in r.breakdown.items()}
        count_hits.extend(r.breakdown["count"].numpy().tolist())
        for j, f in enumerate(PREVIEW_FRACTIONS):
            pv = np.stack([np.asarray(t.refinements[j].preview, dtype=np.float32) / 255.0 for t in out.trajectories])
            pv_analyses = analyze_scenes(pv)
            preview_acc[str(f)].append(preview_object_accuracy(pv_analyses, final_analyses))
            pr = reward.from_analyses(parsed, pv_analyses).scores.numpy()
            preview_align[str(f)].append(float(pr.mean()))
            verdict[str(f)].append(float(((pr >= 1 - 1e-6) == (scores >= 1 - 1e-6)).mean()))
    result["count_accuracy"] = float(np.mean(count_hits))
    result["preview_accuracy"] = {k: float(np.mean(v)) for k, v in preview_acc.items()}
    result["preview_alignment"] = {k: float(np.mean(v)) for k, v in preview_align.items()}
    result["preview_verdict_agreement"] = {k: float(np.mean(v)) for k, v in verdict.items()}
    # plain sampling throughput
    items = sample_prompts("train", timing_images, seed + 1)
    timing = sample(pipe, [it.caption for it in items], list(range(timing_images)), steps=steps, guidance=guidance,
                    progress=False)
    result["images_per_second"] = timing_images / timing.seconds
    result["seconds"] = time.perf_counter() - t_start
    return result
