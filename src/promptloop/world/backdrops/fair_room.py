"""Gate G2 of the Backdrops world (`promptloop world room --world v3 --rules --json`): the room, measured fairly.

For `n` queries of a prompt set x `seeds` seeds (every reward against the original query, never a rewrite; the
reward is the world's task reward `backdrops_legible`):
- `base`: the query as written.
- `feed_forward_bound`: the best of the up-front candidates (`rewrites.upfront_candidates`: the query, then every
  fixed colour filled into its open colours) chosen per query on one half of the seeds and scored on the other
  (`world.fair.seed_crossfit`); `fixed_colours`: each fixed colour's mean.
- `upfront_oracle`: the per-sample best of those candidates (hindsight).
- rules (`rewrites.RULES`) at each switch fraction: the sampler runs the query until then, the rule reads the
  sample's x0 preview with the analyzer and rewrites the query for the remaining steps; its blind control makes
  the same edit at the same moment without the preview. Per rule: mean, margin over the fair bound with a 95 %
  bootstrap CI over queries, and the mean alignment and legibility.
- `best_rule`: the preview-reading rule and switch fraction chosen on one half of the queries and scored on the
  other (`world.fair.query_crossfit`); `best_rule_margin` = best_rule - feed_forward_bound per query, with its CI;
  `best_rule_blind_margin`: the chosen rules' blind controls scored the same way.
- `arithmetic`: `legibility.room_arithmetic()`, the bound the world's design sets before any model is trained.
- with `phrases`: condition 1 in reward terms, whether naming a backdrop up front could stand in for reading it.
  Every fixed colour is tried again with each backdrop phrase no caption is trained on (`grammar.LIGHT`, `DARK`):
  `phrase_candidates` (each one's mean), `feed_forward_bound_with_phrases` (the fair bound over all the candidates,
  chosen the same way), `upfront_oracle_with_phrases`, and `best_rule_margin_over_phrases` (the cross-fitted best
  rule over that bound, with its CI). The gate's figures are unchanged by it.
Pass (`g2_pass`): best_rule_margin >= 0.10 with the CI's low end > 0, and the blind margin's CI containing 0.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from promptloop.world.backdrops.backbone import DEFAULT_BACKBONE
from promptloop.world.backdrops.grammar import DARK, LIGHT
from promptloop.world.backdrops.legibility import room_arithmetic
from promptloop.world.backdrops.prompts import sample_prompts
from promptloop.world.backdrops.rewards import BackdropsLegibleReward
from promptloop.world.backdrops.rewrites import RULES, PreviewRulePolicy, fill_colours, upfront_candidates
from promptloop.world.backdrops.scene import COLOURS
from promptloop.world.fair import (
    bootstrap_ci,
    check_room_setup,
    query_crossfit,
    query_halves,
    seed_crossfit,
    select_rules,
)
from promptloop.world.sampling import check_eta, fraction_to_step, sample
from promptloop.world.scheduler import timestep_shift_of

FRACTIONS = (0.10, 0.15, 0.25, 0.35)  # the switch moments the rules are tried at (G1 measures the window from 10 %)


def _scores(reward: BackdropsLegibleReward, images: np.ndarray, queries: list[str], shape: tuple[int, int]
            ) -> tuple[np.ndarray, dict[str, float]]:
    out = reward(images, queries)
    return out.scores.numpy().reshape(shape), {"alignment": float(out.breakdown["alignment"].mean()),
                                               "legibility": float(out.breakdown["legibility"].mean())}


def room_backdrops(backbone: str | None = None, n: int = 128, seeds: int = 4, candidates: int = 8, steps: int = 20,
                   guidance: float = 4.0, seed: int = 0, split: str = "heldout", eta: float = 0.0,
                   batch_size: int = 64, fractions: tuple[float, ...] = FRACTIONS,
                   rules: tuple[str, ...] | None = None, timestep_shift: float | None = None,
                   guidance_from: float = 0.0, phrases: bool = False) -> dict[str, Any]:
    """Gate G2's figures (see the module docstring). `candidates` is fixed by the world (the query and every
    fixed colour, 1 + len(COLOURS)); another value is refused. `phrases`: also the backdrop-phrase candidates."""
    chosen_rules = select_rules(rules, RULES)
    if candidates != 1 + len(COLOURS):
        raise ValueError(f"the Backdrops room's up-front candidates are the query and every fixed colour "
                         f"({1 + len(COLOURS)}); got candidates={candidates}")
    check_room_setup(fractions, seeds)
    t0 = time.perf_counter()
    check_eta(eta, timestep_shift=timestep_shift)
    from promptloop.world.backbone import load_backbone

    pipe = load_backbone(backbone or DEFAULT_BACKBONE, timestep_shift=timestep_shift)
    reward = BackdropsLegibleReward()
    items = sample_prompts(split, n, seed)
    shape = (len(items), seeds)
    cands = [upfront_candidates(it.query) for it in items]
    queries = [it.caption for it in items for _ in range(seeds)]
    sample_seeds = [seed * 7919 + 31 * i + s for i in range(len(items)) for s in range(seeds)]
    common = {"steps": steps, "guidance": guidance, "guidance_from": guidance_from, "eta": eta,
              "batch_size": batch_size}

    def score_candidates(texts: dict[str, list[str]], label: str) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
        """Each candidate (one text per query) sampled on every seed: scores (candidate, query, seed), parts."""
        scores, parts = np.zeros((len(texts), *shape)), {}
        for k, (name, per_query) in enumerate(texts.items()):
            prompts = [t for t in per_query for _ in range(seeds)]
            out = sample(pipe, prompts, sample_seeds, desc=f"room {label} {k + 1}/{len(texts)}", **common)
            scores[k], parts[name] = _scores(reward, out.images, queries, shape)
        return scores, parts

    ff, parts = score_candidates({name: [c[k] for c in cands] for k, name in enumerate(("query", *COLOURS))},
                                 "up-front")
    base = ff[0]
    bound = seed_crossfit(ff)
    result: dict[str, Any] = {
        "world": "backdrops", "reward": "backdrops_legible", "split": split, "n": len(items), "seeds": seeds,
        "steps": steps, "guidance": guidance, "eta": eta, "guidance_from": guidance_from,
        "timestep_shift": timestep_shift_of(pipe.scheduler),
        "fractions": list(fractions), "arithmetic": room_arithmetic(),
        "open_colour_share": float(np.mean([o.colour is None for it in items for o in it.query.objects])),
        "base": float(base.mean()), "base_parts": parts["query"],
        "fixed_colours": {c: {"mean": float(ff[1 + k].mean()), **parts[c]} for k, c in enumerate(COLOURS)},
        "feed_forward_bound": float(bound.mean()), "feed_forward_bound_ci": bootstrap_ci(bound, seed),
        "upfront_oracle": float(ff.max(axis=0).mean()), "rules": {}, "blind": {},
    }
    rule_per_query: dict[str, np.ndarray] = {}
    blind_per_query: dict[str, np.ndarray] = {}
    for frac in fractions:
        step, pct = fraction_to_step(frac, steps), int(round(frac * 100))
        for name, (rule, blind) in chosen_rules.items():
            for kind, fn in (("rules", rule), ("blind", blind)):
                if fn is None:
                    continue
                out = sample(pipe, queries, sample_seeds, policy=PreviewRulePolicy(fn), mode="feedback",
                             refinement_steps=[step], desc=f"room {kind} {name} {pct}%", **common)
                scores, part = _scores(reward, out.images, queries, shape)
                per_query = scores.mean(axis=1)
                key = f"{name}_{pct}"
                (rule_per_query if kind == "rules" else blind_per_query)[key] = per_query
                result[kind][key] = {"mean": float(scores.mean()), "margin": float((per_query - bound).mean()),
                                     "margin_ci": bootstrap_ci(per_query - bound, seed), **part}
    best, chosen = query_crossfit(rule_per_query, seed)
    result["best_rule"] = float(best.mean())
    result["best_rule_chosen"] = chosen
    result["best_rule_margin"] = float((best - bound).mean())
    result["best_rule_margin_ci"] = bootstrap_ci(best - bound, seed)
    if phrases:
        named = {f"{c}{p}".strip(): [fill_colours(it.query, c) + p for it in items] for p in (LIGHT, DARK) for c in COLOURS}
        extra, extra_parts = score_candidates(named, "phrase")
        result["phrase_candidates"] = {name: {"mean": float(extra[k].mean()), **extra_parts[name]}
                                       for k, name in enumerate(named)}
        everything = np.concatenate([ff, extra])
        bound_all = seed_crossfit(everything)
        result["feed_forward_bound_with_phrases"] = float(bound_all.mean())
        result["feed_forward_bound_with_phrases_ci"] = bootstrap_ci(bound_all, seed)
        result["upfront_oracle_with_phrases"] = float(everything.max(axis=0).mean())
        result["best_rule_margin_over_phrases"] = float((best - bound_all).mean())
        result["best_rule_margin_over_phrases_ci"] = bootstrap_ci(best - bound_all, seed)
    if all(k in blind_per_query for k in rule_per_query):
        h1, h2 = query_halves(len(items), seed)
        control = np.empty(len(items))
        control[h2], control[h1] = blind_per_query[chosen[0]][h2], blind_per_query[chosen[1]][h1]
        result["best_rule_blind_margin"] = float((control - bound).mean())
        result["best_rule_blind_margin_ci"] = bootstrap_ci(control - bound, seed)
    lo = result["best_rule_margin_ci"][0]
    blind_ci = result.get("best_rule_blind_margin_ci", (0.0, 0.0))
    result["g2_pass"] = bool(result["best_rule_margin"] >= 0.10 and lo > 0 and blind_ci[0] <= 0.0 <= blind_ci[1])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
