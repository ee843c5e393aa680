"""Room for the loop, measured before any RL (`promptloop world room`).

For `n` heldout queries, `seeds` seeds each (the seeds split in two halves A and B), and the same
`candidates` rewrites per query (candidate 0 = the query itself; see world.shapes.rewrites):
- `base`: mean alignment of the plain query.
- `feed_forward_bound`: the best single up-front rewrite per query, chosen on one half of the seeds
  and scored on the other (A->B and B->A, averaged): the fair feed-forward bound.
- `feed_forward_in_sample`: the same choice scored on the seeds it was chosen on (optimistic).
- `midway_oracle_25` / `midway_oracle_50`: hindsight oracles that sample with the query until 25%
  (50%) of sampling, then switch each sample to the best of the candidates (max over candidates of
  the final alignment, per sample).
- `gap_25` / `gap_50`: oracle minus feed-forward bound (the target is >= 0.15).
- `upfront_oracle`: the per-sample best of the candidates used from the start (hindsight, like the mid-way
  oracles): what a switch could reach if the prompt still decided everything, i.e. their ceiling.
- `midway_random_25` / `_50`: switching each sample to a random candidate instead (the mean over
  candidates): how much of the oracle is selection among perturbations rather than a better prompt.
- `midway_fair_25` / `_50`: the best single switch per query chosen on one half of the seeds and
  scored on the other (as for the feed-forward bound): a switch that uses no per-sample information.
  The oracle minus this is what seeing each sample's own preview could be worth at most.
With `anchored=True`, the same three mid-way figures again with candidates that see the preview
(`midway_anchored_oracle_25` / `_50`, `midway_anchored_random_*`, `midway_anchored_fair_*`, `gap_anchored_*`):
at the switch each sample's x0 preview is analysed and its candidates pin the query's objects to where
the preview shows them (`world.shapes.rewrites.anchored_rewrites`; candidate 0 is again the plain query). This
is what a policy that sees the preview can say and a feed-forward rewriter cannot.
All alignments are against the original query, never the rewrite. `timestep_shift` overrides the backbone's
sampling schedule (`world.scheduler`; None: its own): the fractions above are fractions of the steps taken.
`eta` > 0 samples stochastically (DDIM's eta; every pass of a sample draws the same noise from its seed), so
that fresh noise keeps parts of the image undecided after a switch.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np

from promptloop.policy.base import FixedPromptPolicy, PolicyInput, PolicyOutput
from promptloop.rewards import get_reward
from promptloop.world.backbone import load_backbone
from promptloop.world.sampling import check_eta, fraction_to_step, sample
from promptloop.world.scheduler import timestep_shift_of
from promptloop.world.shapes.analyzer import analyze_scenes
from promptloop.world.shapes.prompts import sample_prompts
from promptloop.world.shapes.rewards import parse_query
from promptloop.world.shapes.rewrites import anchored_rewrites, candidate_rewrites


class AnchoredCandidatePolicy:
    """Switches each sample to candidate `index` of `anchored_rewrites(query, its preview's analysis, k)`.

    The candidates of a sample depend only on its query, its preview and its position in the batch (the
    seed of their random choices), so the k passes of an oracle see the same k candidates."""

    def __init__(self, index: int, k: int) -> None:
        self.index, self.k = index, k

    def propose(self, inputs: PolicyInput) -> PolicyOutput:
        if inputs.previews is None:
            raise ValueError("AnchoredCandidatePolicy needs previews (feedback mode)")
        analyses = analyze_scenes([np.asarray(p, dtype=np.float32) / 255.0 for p in inputs.previews])
        prompts = []
        for i, (q, a) in enumerate(zip(inputs.queries, analyses, strict=True)):
            cands = anchored_rewrites(parse_query(q), a, self.k, random.Random(i))
            prompts.append(cands[min(self.index, len(cands) - 1)])
        return FixedPromptPolicy(prompts).propose(inputs)


def room(backbone: str | None = None, n: int = 128, seeds: int = 4, candidates: int = 8, steps: int = 20,
         guidance: float = 4.0, seed: int = 0, anchored: bool = False,
         timestep_shift: float | None = None, eta: float = 0.0) -> dict[str, Any]:
    if seeds < 2:
        raise ValueError("room needs at least 2 seeds per query (chosen on one half, scored on the other)")
    t0 = time.perf_counter()
    check_eta(eta, timestep_shift=timestep_shift)
    pipe = load_backbone(backbone, timestep_shift=timestep_shift)
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
        out = sample(pipe, prompts, sample_seeds, steps=steps, guidance=guidance, eta=eta, desc=f"room feed-forward {c + 1}/{k}")
        ff[c] = reward(out.images, queries).scores.numpy().reshape(len(items), seeds)
    # base: the query as written (it is also a realisation; report it separately)
    out = sample(pipe, queries, sample_seeds, steps=steps, guidance=guidance, eta=eta, desc="room base")
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
        "timestep_shift": timestep_shift_of(pipe.scheduler), "eta": eta,
        "base": float(base.mean()),
        "feed_forward_bound": float(ff_bound),
        "feed_forward_in_sample": float(ff_in),
        "upfront_oracle": float(np.maximum(ff.max(axis=0), base).mean()),
    }
    kinds = [("", "blind")] + ([("anchored_", "anchored")] if anchored else [])
    for prefix, kind in kinds:
        for frac in (0.25, 0.5):
            step = fraction_to_step(frac, steps)
            pct = int(frac * 100)
            switched = np.zeros((k, len(items), seeds))
            for c in range(k):
                if kind == "blind":  # FixedPromptPolicy holds one prompt per sample of the whole call: one batch
                    policy: Any = FixedPromptPolicy([cands[i][c] for i in range(len(items)) for _ in range(seeds)])
                    batch = len(queries)
                else:
                    policy, batch = AnchoredCandidatePolicy(c, k), 64
                out = sample(pipe, queries, sample_seeds, policy=policy, mode="feedback", refinement_steps=[step],
                             steps=steps, guidance=guidance, eta=eta, batch_size=batch,
                             desc=f"room {prefix}oracle {pct}% {c + 1}/{k}")
                switched[c] = reward(out.images, queries).scores.numpy().reshape(len(items), seeds)
            # the oracle may also keep the query (no switch): include the base
            oracle = np.maximum(switched.max(axis=0), base)
            result[f"midway_{prefix}oracle_{pct}"] = float(oracle.mean())
            result[f"gap_{prefix}{pct}"] = float(oracle.mean() - ff_bound)
            result[f"midway_{prefix}random_{pct}"] = float(switched.mean())
            sw_a = switched[:, :, a].mean(axis=2).argmax(axis=0)
            sw_b = switched[:, :, b].mean(axis=2).argmax(axis=0)
            fair = 0.5 * (switched[sw_a, idx][:, b].mean() + switched[sw_b, idx][:, a].mean())
            result[f"midway_{prefix}fair_{pct}"] = float(fair)
    result["seconds"] = time.perf_counter() - t0
    return result
