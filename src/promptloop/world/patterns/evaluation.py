"""Competence and temporal structure of a Patterns-world backbone (`promptloop world backbone-eval --world v2`).

On `n` train and `n` heldout queries (one seed each, deterministic DDIM by default), the final images give:
- `alignment_{split}`, `full_correct_{split}`, `breakdown_{split}` (per fact kind), `count_accuracy`;
- `pattern_accuracy`: over query objects the final image shows in the right colour and shape, the fraction
  with the asked pattern (the competence figure for the late attribute), per split and pooled.
The x0 previews at 25 / 50 / 75 % of sampling give, against the final image (`preview_agreement`):
per attribute, the fraction of the final image's objects whose preview shows an object in the same cell
(`cell`), and among those the fraction with the same colour / shape / pattern (`pattern_patterned`: the
same, over final objects that carry a pattern, i.e. not solid). Positions settled early and
patterns still open mid-way is the structure the world is built for (`temporal_structure`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from promptloop.policy.base import NullPolicy
from promptloop.world.backbone import load_backbone
from promptloop.world.patterns.analyzer import PatternAnalysis, analyze_scenes
from promptloop.world.patterns.backbone import DEFAULT_BACKBONE
from promptloop.world.patterns.prompts import sample_prompts
from promptloop.world.patterns.rewards import PatternsAlignmentReward, parse_patterns_query
from promptloop.world.patterns.scene import Query
from promptloop.world.sampling import check_eta, fraction_to_step, sample
from promptloop.world.scheduler import timestep_shift_of

PREVIEW_FRACTIONS = (0.25, 0.5, 0.75)
PREVIEW_ATTRIBUTES = ("cell", "colour", "shape", "pattern", "pattern_patterned")


def preview_agreement(previews: list[PatternAnalysis], finals: list[PatternAnalysis]) -> dict[str, tuple[int, int]]:
    """(agreeing, counted) per attribute of previews against the final images (see the module docstring)."""
    tally = {a: [0, 0] for a in PREVIEW_ATTRIBUTES}
    for pv, fn in zip(previews, finals, strict=True):
        by_cell = {o.cell: o for o in pv.objects}
        for o in fn.objects:
            p = by_cell.get(o.cell)
            tally["cell"][0] += p is not None
            tally["cell"][1] += 1
            if p is not None:
                for attr in ("colour", "shape", "pattern"):
                    tally[attr][0] += getattr(p, attr) == getattr(o, attr)
                    tally[attr][1] += 1
                if o.pattern != "solid":  # agreement on "solid" alone says nothing about a pattern forming
                    tally["pattern_patterned"][0] += p.pattern == o.pattern
                    tally["pattern_patterned"][1] += 1
    return {a: (c, t) for a, (c, t) in tally.items()}


def pattern_hits(parsed: list[Query], analyses: list[PatternAnalysis]) -> tuple[int, int]:
    """(right pattern, counted): query objects shown in their colour and shape, and of those the right pattern."""
    hits = counted = 0
    for q, a in zip(parsed, analyses, strict=True):
        for o in q.objects:
            found = [d for d in a.objects if d.colour == o.colour and d.shape == o.shape]
            if found:
                counted += 1
                hits += any(d.pattern == o.pattern for d in found)
    return hits, counted


def backbone_eval_patterns(backbone: str | None = None, n: int = 256, seed: int = 0, steps: int = 20,
                           guidance: float = 4.0, eta: float = 0.0,
                           timestep_shift: float | None = None) -> dict[str, Any]:
    """Quality window and temporal structure of a Patterns-world backbone (see the module docstring);
    `timestep_shift` overrides the backbone's sampling schedule (`world.scheduler`; None: its own)."""
    t_start = time.perf_counter()
    check_eta(eta, timestep_shift=timestep_shift)
    pipe = load_backbone(backbone or DEFAULT_BACKBONE, timestep_shift=timestep_shift)
    reward = PatternsAlignmentReward()
    refine_steps = [fraction_to_step(f, steps) for f in PREVIEW_FRACTIONS]
    result: dict[str, Any] = {"world": "patterns", "n": n, "seed": seed, "steps": steps, "guidance": guidance, "eta": eta,
                              "timestep_shift": timestep_shift_of(pipe.scheduler)}
    agree = {f: {a: [0, 0] for a in PREVIEW_ATTRIBUTES} for f in PREVIEW_FRACTIONS}
    count_hits: list[float] = []
    pattern_total = [0, 0]
    sampled, sampling_seconds = 0, 0.0
    for split in ("train", "heldout"):
        items = sample_prompts(split, n, seed)
        queries = [it.caption for it in items]
        parsed = [parse_patterns_query(q) for q in queries]
        seeds = [seed * 1_000_003 + i for i in range(len(items))]
        out = sample(pipe, queries, seeds, policy=NullPolicy(), mode="feedback", refinement_steps=refine_steps,
                     steps=steps, guidance=guidance, eta=eta, desc=f"backbone-eval v2 {split}")
        sampled, sampling_seconds = sampled + len(queries), sampling_seconds + out.seconds
        finals = analyze_scenes(out.images)
        r = reward.from_analyses(parsed, finals)
        scores = r.scores.numpy()
        result[f"alignment_{split}"] = float(scores.mean())
        result[f"full_correct_{split}"] = float((scores >= 1 - 1e-6).mean())
        result[f"breakdown_{split}"] = {k: float(v.numpy().mean()) for k, v in r.breakdown.items()}
        count_hits += r.breakdown["count"].numpy().tolist()
        hits, counted = pattern_hits(parsed, finals)
        result[f"pattern_accuracy_{split}"] = hits / counted if counted else 0.0
        pattern_total[0] += hits
        pattern_total[1] += counted
        for j, f in enumerate(PREVIEW_FRACTIONS):
            pv = np.stack([np.asarray(t.refinements[j].preview, dtype=np.float32) / 255.0 for t in out.trajectories])
            for a, (c, t) in preview_agreement(analyze_scenes(pv), finals).items():
                agree[f][a][0] += c
                agree[f][a][1] += t
    result["count_accuracy"] = float(np.mean(count_hits))
    result["pattern_accuracy"] = pattern_total[0] / pattern_total[1] if pattern_total[1] else 0.0
    result["preview_agreement"] = {a: {str(f): (agree[f][a][0] / agree[f][a][1] if agree[f][a][1] else 0.0)
                                       for f in PREVIEW_FRACTIONS} for a in PREVIEW_ATTRIBUTES}
    result["temporal_structure"] = {
        "cell_at_50": result["preview_agreement"]["cell"]["0.5"],
        "pattern_at_50": result["preview_agreement"]["pattern"]["0.5"],
        "patterned_at_50": result["preview_agreement"]["pattern_patterned"]["0.5"],
        "pattern_final": result["pattern_accuracy"],
    }
    result["images_per_second"] = sampled / sampling_seconds if sampling_seconds else 0.0
    result["seconds"] = time.perf_counter() - t_start
    return result
