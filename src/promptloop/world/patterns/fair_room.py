"""Room for the loop in the Patterns world, measured fairly (`promptloop world room --world v2 --rules`).

For `n` queries of a prompt set x `seeds` seeds (all alignments against the original query, never a rewrite;
`timestep_shift` overrides the backbone's sampling schedule, `world.scheduler`):
- `base`: the query as written.
- `feed_forward_bound`: the best of `candidates` faithful up-front rewrites (`rewrites.upfront_candidates`;
  candidate 0 is the query) chosen per query on one half of the seeds and scored on the other.
- `upfront_oracle`: the per-sample best of those candidates (hindsight).
- rules (`rewrites.RULES`), each at 25 % and 50 % of sampling: the sampler runs the query until then, the
  rule reads the sample's x0 preview with the analyzer and rewrites the query for the remaining steps; its
  blind control makes the same kind of edit without the preview. Per rule: its mean, its margin over the
  fair bound with a 95 % bootstrap CI over queries, and the facts it fixes and breaks against the base
  (per fact kind: the mean gain and loss of that kind's satisfied fraction, over samples).
- `oracle`: the per-sample best of every mid-way action and the base (hindsight).
- `best_rule`: the preview-reading rule (and switch time) chosen on one half of the queries and scored on the
  other (`world.fair.query_crossfit`); `best_rule_margin` = best_rule - feed_forward_bound, per query, with
  `best_rule_margin_ci`; `best_rule_blind_margin` scores the chosen rules' blind controls the same way.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np

from promptloop.policy.base import FixedPromptPolicy, PolicyInput, PolicyOutput
from promptloop.world.backbone import load_backbone
from promptloop.world.fair import (
    bootstrap_ci,
    check_room_setup,
    query_crossfit,
    query_halves,
    seed_crossfit,
    select_rules,
)
from promptloop.world.patterns.analyzer import analyze_scenes
from promptloop.world.patterns.backbone import DEFAULT_BACKBONE
from promptloop.world.patterns.prompts import sample_prompts
from promptloop.world.patterns.rewards import PATTERN_FACT_KINDS, PatternsAlignmentReward, parse_patterns_query
from promptloop.world.patterns.rewrites import RULES, Rule, upfront_candidates
from promptloop.world.sampling import check_eta, fraction_to_step, sample
from promptloop.world.scheduler import timestep_shift_of

FRACTIONS = (0.25, 0.5)


class RulePolicy:
    """Rewrites each sample's query with `rule` from the analysis of its x0 preview.

    A sample's random choices (blind controls) are seeded by its query and its position in the call, so every
    pass over the same samples makes the same choices."""

    def __init__(self, rule: Rule, seed: int = 0) -> None:
        self.rule, self.seed = rule, seed
        self._offset = 0

    def propose(self, inputs: PolicyInput) -> PolicyOutput:
        if inputs.previews is None:
            raise ValueError("RulePolicy needs previews (feedback mode)")
        analyses = analyze_scenes([np.asarray(p, dtype=np.float32) / 255.0 for p in inputs.previews])
        prompts = []
        for i, (q, a) in enumerate(zip(inputs.queries, analyses, strict=True)):
            rng = random.Random(f"{self.seed}:{self._offset + i}:{q}")
            prompts.append(self.rule(q, parse_patterns_query(q), a, rng))
        self._offset += len(inputs.queries)
        return FixedPromptPolicy(prompts).propose(inputs)


def _scores(reward: PatternsAlignmentReward, images: np.ndarray, queries: list[str], shape: tuple[int, int]
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    out = reward(images, queries)
    kinds = {k: out.breakdown[k].numpy().reshape(shape) for k in PATTERN_FACT_KINDS}
    return out.scores.numpy().reshape(shape), kinds


def _fixes_breaks(kinds: dict[str, np.ndarray], base: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {k: {"fixes": float(np.clip(kinds[k] - base[k], 0, None).mean()),
                "breaks": float(np.clip(base[k] - kinds[k], 0, None).mean())} for k in PATTERN_FACT_KINDS}


def room_patterns(backbone: str | None = None, n: int = 128, seeds: int = 4, candidates: int = 8, steps: int = 20,
                  guidance: float = 4.0, seed: int = 0, split: str = "heldout", eta: float = 0.0,
                  batch_size: int = 64, fractions: tuple[float, ...] = FRACTIONS,
                  rules: tuple[str, ...] | None = None, timestep_shift: float | None = None) -> dict[str, Any]:
    """The fair room figures of the Patterns world (see the module docstring); `rules`: a subset of RULES
    (None or empty: all)."""
    chosen_rules = select_rules(rules, RULES)
    if not any(blind is not None for _, blind in chosen_rules.values()):
        raise ValueError("the room needs at least one rule that reads the preview")
    check_room_setup(fractions, seeds)
    t0 = time.perf_counter()
    check_eta(eta, timestep_shift=timestep_shift)
    pipe = load_backbone(backbone or DEFAULT_BACKBONE, timestep_shift=timestep_shift)
    reward = PatternsAlignmentReward()
    items = sample_prompts(split, n, seed)
    shape = (len(items), seeds)
    rng = random.Random(seed)
    cands = [upfront_candidates(it.caption, it.query, candidates, rng) for it in items]
    queries = [it.caption for it in items for _ in range(seeds)]
    sample_seeds = [seed * 7919 + 31 * i + s for i in range(len(items)) for s in range(seeds)]
    common = {"steps": steps, "guidance": guidance, "eta": eta, "batch_size": batch_size}

    out = sample(pipe, queries, sample_seeds, desc="room base", **common)
    base, base_kinds = _scores(reward, out.images, queries, shape)
    ff = np.zeros((candidates, *shape))
    for c in range(candidates):
        prompts = [cands[i][c] for i in range(len(items)) for _ in range(seeds)]
        out = sample(pipe, prompts, sample_seeds, desc=f"room up-front {c + 1}/{candidates}", **common)
        ff[c] = _scores(reward, out.images, queries, shape)[0]
    bound = seed_crossfit(ff)  # per query

    result: dict[str, Any] = {
        "world": "patterns", "split": split, "n": len(items), "seeds": seeds, "candidates": candidates,
        "steps": steps, "guidance": guidance, "eta": eta, "timestep_shift": timestep_shift_of(pipe.scheduler),
        "fractions": list(fractions),
        "base": float(base.mean()), "feed_forward_bound": float(bound.mean()),
        "feed_forward_bound_ci": bootstrap_ci(bound, seed), "upfront_oracle": float(np.maximum(ff.max(axis=0), base).mean()),
        "rules": {}, "blind": {},
    }
    midway: list[np.ndarray] = []
    rule_per_query: dict[str, np.ndarray] = {}
    blind_per_query: dict[str, np.ndarray] = {}
    for frac in fractions:
        step, pct = fraction_to_step(frac, steps), int(frac * 100)
        for name, (rule, blind) in chosen_rules.items():
            for kind, fn in (("rules", rule), ("blind", blind)):
                if fn is None:
                    continue
                out = sample(pipe, queries, sample_seeds, policy=RulePolicy(fn, seed), mode="feedback",
                             refinement_steps=[step], desc=f"room {kind} {name} {pct}%", **common)
                scores, kinds = _scores(reward, out.images, queries, shape)
                midway.append(scores)
                per_query = scores.mean(axis=1)
                key = f"{name}_{pct}"
                reads_preview = kind == "rules" and blind is not None
                (rule_per_query if reads_preview else blind_per_query)[key] = per_query
                result[kind][key] = {"mean": float(scores.mean()), "margin": float((per_query - bound).mean()),
                                     "margin_ci": bootstrap_ci(per_query - bound, seed),
                                     "facts": _fixes_breaks(kinds, base_kinds)}
    result["oracle"] = float(np.maximum(np.max(midway, axis=0), base).mean())
    best, chosen = query_crossfit(rule_per_query, seed)
    result["best_rule"] = float(best.mean())
    result["best_rule_chosen"] = chosen
    result["best_rule_margin"] = float((best - bound).mean())
    result["best_rule_margin_ci"] = bootstrap_ci(best - bound, seed)
    blind_of = {k: blind_per_query[k] for k in rule_per_query if k in blind_per_query}
    if len(blind_of) == len(rule_per_query):  # the chosen rules' controls, on the halves the rules are scored on
        h1, h2 = query_halves(len(items), seed)
        control = np.empty(len(items))
        control[h2], control[h1] = blind_of[chosen[0]][h2], blind_of[chosen[1]][h1]
        result["best_rule_blind_margin"] = float((control - bound).mean())
        result["best_rule_blind_margin_ci"] = bootstrap_ci(control - bound, seed)
    result["seconds"] = time.perf_counter() - t0
    return result
