"""Room for the loop, measured before any RL (`promptloop world room`).

For `n` heldout queries, `seeds` seeds each (the seeds split in two halves A and B), and the same
`candidates` rewrites per query (candidate 0 = the query itself; see world.rewrites):
- `base`: mean alignment of the plain query.
- `feed_forward_bound`: the best single up-front rewrite per query, chosen on one half of the seeds
  and scored on the other (A->B and B->A, averaged): the fair feed-forward bound.
- `feed_forward_in_sample`: the same choice scored on the seeds it was chosen on (optimistic).
- `midway_oracle_25` / `midway_oracle_50`: hindsight oracles that sample with the query until 25%
  (50%) of sampling, then switch each sample to the best of the candidates (max over candidates of
  the final alignment, per sample).
- `gap_25` / `gap_50`: oracle minus feed-forward bound (the target is >= 0.15).
- `midway_random_25` / `_50`: switching each sample to a random candidate instead (the mean over
  candidates): how much of the oracle is selection among perturbations rather than a better prompt.
- `midway_fair_25` / `_50`: the best single switch per query chosen on one half of the seeds and
  scored on the other (as for the feed-forward bound): a switch that uses no per-sample information.
  The oracle minus this is what seeing each sample's own preview could be worth at most.
All alignments are against the original query, never the rewrite.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np

from promptloop.eval.sampling import fraction_to_step, sample
from promptloop.policy.base import FixedPromptPolicy
from promptloop.rewards import get_reward
from promptloop.world.backbone import load_backbone
from promptloop.world.prompts import sample_prompts
from promptloop.world.rewrites import candidate_rewrites


def room(backbone: str | None = None, n: int = 128, seeds: int = 4, candidates: int = 8, steps: int = 20,
         guidance: float = 4.0, seed: int = 0) -> dict[str, Any]:
    if seeds < 2:
        raise ValueError("room needs at least 2 seeds per query (chosen on one half, scored on the other)")
    t0 = time.perf_counter()
    pipe = load_backbone(backbone)
    reward = get_reward("alignment")
    items = sample_prompts("heldout", n, seed)
    rng = random.Random(seed)
    cands = [candidate_rewrites(it.query, candidates, rng) for it in items]
    k = min(len(c) for c in cands)
    cands = [c[:k] for c in cands]
    queries = [it.caption for it in items for _ in range(seeds)]
    sample_seeds = [seed * 7919 + 31 * i + s for i in range(len(items)) for s in range(seeds)]

    # scores[c, i, s]: alignment with candidate c used from the start (feed-forward)
    ff = np.zeros((k, len(items), seeds))
    for c in range(k):
        prompts = [cands[i][c] for i in range(len(items)) for _ in range(seeds)]
        out = sample(pipe, prompts, sample_seeds, steps=steps, guidance=guidance, desc=f"room feed-forward {c + 1}/{k}")
        ff[c] = reward(out.images, queries).scores.numpy().reshape(len(items), seeds)
    # base: the query as written (it is also a realisation; report it separately)
    out = sample(pipe, queries, sample_seeds, steps=steps, guidance=guidance, desc="room base")
    base = reward(out.images, queries).scores.numpy().reshape(len(items), seeds)

    half = seeds // 2
    a, b = slice(0, half), slice(half, seeds)
    best_a = ff[:, :, a].mean(axis=2).argmax(axis=0)  # (items,)
    best_b = ff[:, :, b].mean(axis=2).argmax(axis=0)
    idx = np.arange(len(items))
    ff_bound = 0.5 * (ff[best_a, idx][:, b].mean() + ff[best_b, idx][:, a].mean())
    ff_in = ff.mean(axis=2).max(axis=0).mean()

    result: dict[str, Any] = {
        "n": n, "seeds": seeds, "candidates": k, "steps": steps, "guidance": guidance,
        "base": float(base.mean()),
        "feed_forward_bound": float(ff_bound),
        "feed_forward_in_sample": float(ff_in),
    }
    for frac in (0.25, 0.5):
        step = fraction_to_step(frac, steps)
        switched = np.zeros((k, len(items), seeds))
        for c in range(k):
            prompts = [cands[i][c] for i in range(len(items)) for _ in range(seeds)]
            # one batch: FixedPromptPolicy holds one prompt per sample of the whole call
            out = sample(pipe, queries, sample_seeds, policy=FixedPromptPolicy(prompts), mode="feedback",
                         refinement_steps=[step], steps=steps, guidance=guidance, batch_size=len(queries),
                         desc=f"room oracle {int(frac * 100)}% {c + 1}/{k}")
            switched[c] = reward(out.images, queries).scores.numpy().reshape(len(items), seeds)
        # the oracle may also keep the query (no switch): include the base
        oracle = np.maximum(switched.max(axis=0), base)
        pct = int(frac * 100)
        result[f"midway_oracle_{pct}"] = float(oracle.mean())
        result[f"gap_{pct}"] = float(oracle.mean() - ff_bound)
        result[f"midway_random_{pct}"] = float(switched.mean())
        sw_a = switched[:, :, a].mean(axis=2).argmax(axis=0)
        sw_b = switched[:, :, b].mean(axis=2).argmax(axis=0)
        result[f"midway_fair_{pct}"] = float(0.5 * (switched[sw_a, idx][:, b].mean() + switched[sw_b, idx][:, a].mean()))
    result["seconds"] = time.perf_counter() - t0
    return result
