"""Why the Shapes world leaves little room for feedback: two studies behind `promptloop world room`.

`python benchmarks/room_studies.py switch [--n 64]`
    How much can the prompt still change an image mid-way? Each heldout query is sampled with an
    unrelated query (the next one in the set) swapped in at 0 / 10 / 25 / 50 % of sampling; prints the
    alignment of the final images with the original query and with the swapped-in one.

`python benchmarks/room_studies.py subset {close,far} [--objects 3] [--n 32]`
    `room` (all its keys) on the heldout queries with `--objects` objects whose colours include a
    close pair (red/orange/pink, blue/purple, green/cyan: "close") or not ("far"): do similar colours,
    whose binding errors the world was meant to decide late, open room for feedback?

`python benchmarks/room_studies.py corrective [--n 32]`
    `room --anchored` with the anchored candidates replaced by corrective ones, which may break the
    query's facts for the rest of sampling: the query, three preview-anchored rewrites, the query
    without one of its objects (each in turn; an extra copy may stop growing when its object is no
    longer asked for), then emphasised realisations. Alignment is still scored against the query.
    Keys `midway_anchored_*` then hold the corrective oracles.

Each prints one JSON object. Seeded and deterministic; one core each is enough (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

import numpy as np

CLOSE_FAMILIES = ({"red", "orange", "pink"}, {"blue", "purple"}, {"green", "cyan"})


def switch_study(n: int, steps: int = 20, guidance: float = 4.0) -> dict[str, Any]:
    from promptloop.policy.base import FixedPromptPolicy
    from promptloop.rewards import get_reward
    from promptloop.world.backbone import load_backbone
    from promptloop.world.sampling import fraction_to_step, sample
    from promptloop.world.shapes.prompts import sample_prompts

    pipe = load_backbone()
    reward = get_reward("alignment")
    queries = [it.caption for it in sample_prompts("heldout", n, 3)]
    other = queries[1:] + queries[:1]
    seeds = list(range(n))
    base = sample(pipe, queries, seeds, steps=steps, guidance=guidance, progress=False)
    result: dict[str, Any] = {"n": n, "base": {"original": float(reward(base.images, queries).scores.mean()),
                                               "swapped_in": float(reward(base.images, other).scores.mean())}}
    for frac in (0.0, 0.1, 0.25, 0.5):
        # 0 %: the other query from the start (a rewrite before sampling)
        step = fraction_to_step(frac, steps) if frac > 0 else 0
        out = sample(pipe, queries, seeds, policy=FixedPromptPolicy(other), mode="feedback", refinement_steps=[step],
                     rewrite_first=frac == 0.0, steps=steps, guidance=guidance, progress=False)
        result[f"switch_{int(frac * 100)}"] = {
            "original": float(reward(out.images, queries).scores.mean()),
            "swapped_in": float(reward(out.images, other).scores.mean()),
            "mean_abs_pixel_change": float(np.abs(out.images - base.images).mean()),
        }
    return result


def subset_study(which: str, objects: int, n: int) -> dict[str, Any]:
    import promptloop.world.shapes.fair_room as room_module
    from promptloop.world.shapes.prompts import prompt_set
    from promptloop.world.shapes.rewards import parse_query

    items = []
    for it in prompt_set("heldout"):
        colours = {o.colour for o in parse_query(it.caption).objects}
        close = any(len(colours & fam) >= 2 for fam in CLOSE_FAMILIES)
        if len(parse_query(it.caption).objects) == objects and close == (which == "close"):
            items.append(it)
    random.Random(0).shuffle(items)
    original = room_module.sample_prompts
    room_module.sample_prompts = lambda name, k, seed: items[:k]  # room on this subset of the heldout set
    try:
        result = room_module.room(n=n, seeds=4)
    finally:
        room_module.sample_prompts = original
    result["subset"] = {"colours": which, "objects": objects, "matching_heldout_queries": len(items)}
    return result


def corrective_rewrites(query: Any, preview: Any, k: int, rng: random.Random) -> list[str]:
    """Query, 3 preview-anchored rewrites, the query without each of its objects in turn, emphasised fill."""
    from promptloop.world.shapes.grammar import realise
    from promptloop.world.shapes.rewrites import anchored_rewrites
    from promptloop.world.shapes.scene import Query

    out = anchored_rewrites(query, preview, 4, rng)
    n = len(query.objects)
    for drop in range(n if n > 1 else 0):
        keep = [i for i in range(n) if i != drop]
        new_index = {old: new for new, old in enumerate(keep)}
        relations = tuple((new_index[a], r, new_index[b]) for a, r, b in query.relations if a in new_index and b in new_index)
        text = realise(Query(tuple(query.objects[i] for i in keep), relations, query.background), random.Random(drop))
        if text not in out:
            out.append(text)
    for i in range(40):
        if len(out) >= k:
            break
        text = realise(query, random.Random(100 + i), emphasis=1.0)
        if text not in out:
            out.append(text)
    return out[:k]


def corrective_study(n: int) -> dict[str, Any]:
    import promptloop.world.shapes.fair_room as room_module

    original = room_module.anchored_rewrites
    room_module.anchored_rewrites = corrective_rewrites  # the anchored oracle's candidates become corrective ones
    try:
        result = room_module.room(n=n, seeds=4, anchored=True)
    finally:
        room_module.anchored_rewrites = original
    result["candidates_of_midway_anchored"] = "corrective (benchmarks/room_studies.py:corrective_rewrites)"
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="study", required=True)
    sw = sub.add_parser("switch")
    sw.add_argument("--n", type=int, default=64)
    ss = sub.add_parser("subset")
    ss.add_argument("colours", choices=["close", "far"])
    ss.add_argument("--objects", type=int, default=3, choices=[1, 2, 3])
    ss.add_argument("--n", type=int, default=32)
    co = sub.add_parser("corrective")
    co.add_argument("--n", type=int, default=32)
    args = ap.parse_args()
    if args.study == "switch":
        out = switch_study(args.n)
    elif args.study == "subset":
        out = subset_study(args.colours, args.objects, args.n)
    else:
        out = corrective_study(args.n)
    print(json.dumps(out))
