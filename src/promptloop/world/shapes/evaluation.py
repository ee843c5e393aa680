"""Quality window of a world backbone (`promptloop world backbone-eval`).

Figures (fixed seeds, `steps` sampling steps with the backbone's own schedule or `timestep_shift`, CFG `guidance`):
- `count_accuracy`: fraction of images (train + heldout) in which the analyzer finds exactly the
  number of objects the query asks for.
- `alignment_train` / `full_correct_train`: mean alignment and fraction of fully correct samples on
  `train` compositions; `alignment_heldout` / `full_correct_heldout` likewise on `heldout` ones.
- `full_correct_by_objects_train` / `_heldout`: the fully correct fraction per number of queried objects.
- `colour_swap_rate_train` / `_heldout`: binding errors. Over the objects of queries with two or more
  objects: the fraction whose shape is found only in another queried object's colour (for "a red
  circle and a blue square", a blue circle and no red one).
- `preview_accuracy`: for previews decoded from the Tweedie x0 estimate at 25/50/75% of sampling,
  the analyzer's accuracy on the preview taking the final image as ground truth: for each object of
  the final image, presence at its cell, colour, shape and size (4 checks per object).
- `preview_alignment`: mean alignment of the previews themselves against the query.
- `preview_verdict_agreement`: fraction of samples whose preview and final image get the same
  fully-correct verdict (what a policy watching the preview could know about the outcome).
- `images_per_second`: throughput of the evaluation's own sampling on this machine (batch 64, `steps`
  steps with CFG, three x0 previews decoded per image: the loop's workload; plain sampling without
  previews is a few per cent faster, see `benchmarks/sampling_speed.py`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from promptloop.policy.base import NullPolicy
from promptloop.world.backbone import load_backbone
from promptloop.world.sampling import check_eta, fraction_to_step, sample
from promptloop.world.scheduler import timestep_shift_of
from promptloop.world.shapes.analyzer import Analysis, analyze_scenes
from promptloop.world.shapes.prompts import sample_prompts
from promptloop.world.shapes.rewards import ShapesAlignmentReward, parse_query
from promptloop.world.shapes.scene import Query

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


def colour_swaps(parsed: list[Query], analyses: list[Analysis]) -> tuple[int, int]:
    """(swapped, counted) objects of multi-object queries; see the module docstring."""
    swapped = counted = 0
    for query, analysis in zip(parsed, analyses, strict=True):
        if len(query.objects) < 2:
            continue
        colours = {o.colour for o in query.objects}
        for o in query.objects:
            counted += 1
            found = {d.colour for d in analysis.objects if d.shape == o.shape}
            swapped += o.colour not in found and bool(found & (colours - {o.colour}))
    return swapped, counted


def _score_split(reward: ShapesAlignmentReward, queries: list[str], out: Any) -> dict[str, Any]:
    """Every figure of one split's samples: final alignment, count hits, and the previews' accuracies."""
    parsed = [parse_query(q) for q in queries]
    final_analyses = analyze_scenes(out.images)  # analysed once, reused for every figure
    r = reward.from_analyses(parsed, final_analyses)
    scores = r.scores.numpy()
    fig: dict[str, Any] = {
        "alignment": float(scores.mean()),
        "full_correct": float((scores >= 1.0 - 1e-6).mean()),
        "breakdown": {k: float(np.nanmean(v.numpy())) for k, v in r.breakdown.items()},
        "count_hits": r.breakdown["count"].numpy().tolist(),
        "colour_swaps": colour_swaps(parsed, final_analyses),
        "full_correct_by_objects": {
            str(k): float(np.mean([s >= 1.0 - 1e-6 for s, q in zip(scores, parsed, strict=True) if len(q.objects) == k]))
            for k in sorted({len(q.objects) for q in parsed})
        },
        "preview_accuracy": {}, "preview_alignment": {}, "preview_verdict_agreement": {},
    }
    for j, f in enumerate(PREVIEW_FRACTIONS):
        pv = np.stack([np.asarray(t.refinements[j].preview, dtype=np.float32) / 255.0 for t in out.trajectories])
        pv_analyses = analyze_scenes(pv)
        pr = reward.from_analyses(parsed, pv_analyses).scores.numpy()
        fig["preview_accuracy"][str(f)] = preview_object_accuracy(pv_analyses, final_analyses)
        fig["preview_alignment"][str(f)] = float(pr.mean())
        fig["preview_verdict_agreement"][str(f)] = float(((pr >= 1 - 1e-6) == (scores >= 1 - 1e-6)).mean())
    return fig


def backbone_eval(backbone: str | None = None, n: int = 256, seed: int = 0, steps: int = 20,
                  guidance: float = 4.0, timestep_shift: float | None = None, eta: float = 0.0) -> dict[str, Any]:
    """Measure the quality window of a backbone on `n` train and `n` heldout queries.

    `timestep_shift` overrides the backbone's sampling schedule (`world.scheduler`; None: its own); `eta` > 0
    samples stochastically (DDIM's eta)."""
    t_start = time.perf_counter()
    check_eta(eta, timestep_shift=timestep_shift)
    pipe = load_backbone(backbone, timestep_shift=timestep_shift)
    reward = ShapesAlignmentReward()
    refine_steps = [fraction_to_step(f, steps) for f in PREVIEW_FRACTIONS]
    result: dict[str, Any] = {"n": n, "seed": seed, "steps": steps, "guidance": guidance,
                              "timestep_shift": timestep_shift_of(pipe.scheduler), "eta": eta}
    sampled, sampling_seconds = 0, 0.0
    figs: dict[str, dict[str, Any]] = {}
    for split in ("train", "heldout"):
        items = sample_prompts(split, n, seed)
        queries = [it.caption for it in items]
        seeds = [seed * 1_000_003 + i for i in range(len(items))]
        out = sample(pipe, queries, seeds, policy=NullPolicy(), mode="feedback", refinement_steps=refine_steps,
                     steps=steps, guidance=guidance, eta=eta, desc=f"backbone-eval {split}")
        sampled, sampling_seconds = sampled + len(queries), sampling_seconds + out.seconds
        figs[split] = _score_split(reward, queries, out)
    for split, fig in figs.items():
        result[f"alignment_{split}"] = fig["alignment"]
        result[f"full_correct_{split}"] = fig["full_correct"]
        result[f"breakdown_{split}"] = fig["breakdown"]
        result[f"full_correct_by_objects_{split}"] = fig["full_correct_by_objects"]
        swapped, counted = fig["colour_swaps"]
        result[f"colour_swap_rate_{split}"] = swapped / counted if counted else 0.0
    result["count_accuracy"] = float(np.mean([h for fig in figs.values() for h in fig["count_hits"]]))
    for key in ("preview_accuracy", "preview_alignment", "preview_verdict_agreement"):
        result[key] = {str(f): float(np.mean([fig[key][str(f)] for fig in figs.values()])) for f in PREVIEW_FRACTIONS}
    result["images_per_second"] = sampled / sampling_seconds
    result["seconds"] = time.perf_counter() - t_start
    return result
