"""Gate G1 of the Backdrops world (`promptloop world backbone-eval --world v3 --json`): the window for feedback.

For `n` queries (every figure against the query the image was sampled for, with the backbone's own schedule):
- **competence**: `train_alignment` / `heldout_alignment` (`backdrops_alignment` on the train / heldout prompt
  sets), `count` (count fact on the train set), `colour_followed` (queries naming every object's colour: the
  fraction of colour facts satisfied, the colour word given from the start);
- **the backdrop is unpromptable**: `word_effects`: per caption word, the paired change of the mean backdrop
  relative luminance when the word is added to a query of the same seed (each colour word filled into every open
  colour of a shape-only query; each relation word against "and"; each shape word against the other shapes), with
  a 95 % bootstrap CI; `max_word_effect`; `backdrop_phrase`: the fraction of seeds on which a query ending "on a
  light background" has a lighter backdrop than the same query ending "on a dark background" (chance: 0.5), CI:
  a paired sign test, which any systematic shift however small moves off 0.5; beside it, as what "followed"
  means in outcomes, `light_half_share` (the share of backdrops in the light half of the range, without a phrase,
  with the light one, with the dark one) and the light-minus-dark share difference with its CI;
- **the backdrops span the range**: `backdrop_quarters`: the share of samples of shape-only queries whose
  backdrop value (the fitted backdrop's mean sRGB level over the tint) falls in each quarter of the training
  range [VALUE_MIN, VALUE_MAX];
- **the window**, per switch fraction: `backdrop_agreement` (the colour most legible against the x0 preview's
  backdrop is the one most legible against the final image's) and `backdrop_value_error` (mean absolute
  difference of the two backdrop values); `colour_steerability` (each open colour of a shape-only query set to a
  random palette colour at that moment: the fraction of those colours the final image shows).
Pass (`g1_pass`): train alignment >= 0.85, count >= 0.85, colour followed >= 0.90, max word effect <= 0.03, the
backdrop phrase's CI containing 0.5, every quarter >= 0.15, and a fraction with agreement >= 0.90 and
steerability >= 0.80.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np

from promptloop.world.backdrops.analyzer import BackdropAnalysis, analyze_scenes
from promptloop.world.backdrops.backbone import DEFAULT_BACKBONE
from promptloop.world.backdrops.grammar import DARK, LIGHT, parse, query_from_scene, realise
from promptloop.world.backdrops.legibility import best_colour
from promptloop.world.backdrops.prompts import sample_prompts
from promptloop.world.backdrops.rewards import BackdropsAlignmentReward
from promptloop.world.backdrops.rewrites import PreviewRulePolicy, fill_colours, random_colour_rule
from promptloop.world.backdrops.scene import (
    COLOURS,
    SHAPES,
    TINTS,
    VALUE_MAX,
    VALUE_MIN,
    ObjectQuery,
    Query,
    SceneSampler,
)
from promptloop.world.fair import bootstrap_ci
from promptloop.world.sampling import check_eta, fraction_to_step, sample
from promptloop.world.scheduler import timestep_shift_of

FRACTIONS = (0.10, 0.15, 0.25, 0.35, 0.50)


def backdrop_value(analysis: BackdropAnalysis) -> float:
    """The backdrop's sRGB level: the fitted backdrop's mean colour over its nearest tint, averaged over channels."""
    rgb = np.asarray(analysis.backdrop_rgb)
    values = {name: float((rgb / np.asarray(t)).mean()) for name, t in TINTS.items()}
    tint = min(TINTS, key=lambda name: float(((np.asarray(TINTS[name]) * values[name] - rgb) ** 2).sum()))
    return values[tint]


def _lum_of(analyses: list[BackdropAnalysis]) -> np.ndarray:
    return np.asarray([a.backdrop_luminance for a in analyses])


def _lum(images: np.ndarray) -> np.ndarray:
    return _lum_of(analyze_scenes(images))


def backbone_eval_backdrops(backbone: str | None = None, n: int = 128, seed: int = 0, steps: int = 20,
                            guidance: float = 4.0, eta: float = 0.0, batch_size: int = 64,
                            fractions: tuple[float, ...] = FRACTIONS, timestep_shift: float | None = None,
                            guidance_from: float = 0.0
                            ) -> dict[str, Any]:
    """Gate G1's figures (see the module docstring)."""
    from promptloop.world.backbone import load_backbone

    if not fractions or not all(0.0 < f < 1.0 for f in fractions):
        raise ValueError(f"switch fractions must be in (0, 1), got {fractions}")
    t0 = time.perf_counter()
    check_eta(eta, timestep_shift=timestep_shift)
    pipe = load_backbone(backbone or DEFAULT_BACKBONE, timestep_shift=timestep_shift)
    common = {"steps": steps, "guidance": guidance, "guidance_from": guidance_from, "eta": eta,
              "batch_size": batch_size}
    reward = BackdropsAlignmentReward()
    seeds = [seed * 100003 + i for i in range(n)]
    result: dict[str, Any] = {"world": "backdrops", "n": n, "seed": seed, "steps": steps, "guidance": guidance,
                              "eta": eta, "guidance_from": guidance_from,
                              "timestep_shift": timestep_shift_of(pipe.scheduler)}

    # competence
    for split in ("train", "heldout"):
        qs = [it.caption for it in sample_prompts(split, n, seed)]
        out = reward(sample(pipe, qs, seeds, desc=f"g1 {split}", **common).images, qs)
        result[f"{split}_alignment"] = float(out.scores.mean())
        if split == "train":
            result["count"] = float(out.breakdown["count"].mean())
            result["full_correct"] = float(out.breakdown["full_correct"].mean())
    crng = random.Random(seed)
    scenes = SceneSampler(seed + 17, "any")
    named = [realise(query_from_scene(scenes.sample(), crng, p_colour=1.0, p_position=0.15, p_relation=0.5))
             for _ in range(n)]
    out = reward(sample(pipe, named, seeds, desc="g1 colours named", **common).images, named)
    result["colour_followed"] = float(out.breakdown["colour"].mean())

    # the backdrop is unpromptable: paired word effects on shape-only queries
    base_items = sample_prompts("shape_only", n, seed)
    base_q = [it.caption for it in base_items]
    base_images = sample(pipe, base_q, seeds, desc="g1 shape-only", **common).images
    base_an = analyze_scenes(base_images)
    base_lum = _lum_of(base_an)
    effects: dict[str, dict[str, Any]] = {}

    def effect(word: str, variant_lum: np.ndarray, reference: np.ndarray) -> None:
        diff = variant_lum - reference
        effects[word] = {"effect": float(diff.mean()), "ci": bootstrap_ci(diff, seed)}

    for colour in COLOURS:
        qs = [fill_colours(it.query, colour) for it in base_items]
        effect(colour, _lum(sample(pipe, qs, seeds, desc=f"g1 word {colour}", **common).images), base_lum)
    with_rel = [i for i, it in enumerate(base_items) if it.query.relations]
    if with_rel:
        for rel in ("left_of", "right_of", "above", "below"):
            qs = [realise(Query(base_items[i].query.objects, tuple((a, rel, b) for a, _, b in base_items[i].query.relations)))
                  for i in with_rel]
            plain = [realise(Query(base_items[i].query.objects)) for i in with_rel]
            lum_rel = _lum(sample(pipe, qs, [seeds[i] for i in with_rel], desc=f"g1 word {rel}", **common).images)
            lum_and = _lum(sample(pipe, plain, [seeds[i] for i in with_rel], desc="g1 word and", **common).images)
            effect(rel.replace("_", " "), lum_rel, lum_and)
    shape_lum = {}
    single = [realise(Query((ObjectQuery(s),))) for s in SHAPES]
    for s, q in zip(SHAPES, single, strict=True):
        shape_lum[s] = _lum(sample(pipe, [q] * n, seeds, desc=f"g1 word {s}", **common).images)
    for s in SHAPES:
        others = np.mean([shape_lum[o] for o in SHAPES if o != s], axis=0)
        effect(s, shape_lum[s], others)
    result["word_effects"] = effects
    result["max_word_effect"] = max(abs(e["effect"]) for e in effects.values())
    light_an = analyze_scenes(sample(pipe, [q + LIGHT for q in base_q], seeds, desc="g1 light phrase", **common).images)
    dark_an = analyze_scenes(sample(pipe, [q + DARK for q in base_q], seeds, desc="g1 dark phrase", **common).images)
    light, dark = _lum_of(light_an), _lum_of(dark_an)
    lighter = (light > dark).astype(np.float64)
    mid = (VALUE_MIN + VALUE_MAX) / 2

    def light_half(analyses: list[BackdropAnalysis]) -> np.ndarray:
        return np.asarray([backdrop_value(a) > mid for a in analyses], dtype=np.float64)

    followed = light_half(light_an) - light_half(dark_an)
    result["backdrop_phrase"] = {"light_lighter_than_dark": float(lighter.mean()), "ci": bootstrap_ci(lighter, seed),
                                 "mean_luminance_difference": float((light - dark).mean()),
                                 "light_half_share": {"no_phrase": float(light_half(base_an).mean()),
                                                      "light_phrase": float(light_half(light_an).mean()),
                                                      "dark_phrase": float(light_half(dark_an).mean())},
                                 "light_half_share_difference": {"light_minus_dark": float(followed.mean()),
                                                                 "ci": bootstrap_ci(followed, seed)}}

    # the backdrops span the training range
    values = np.asarray([backdrop_value(a) for a in base_an])
    edges = np.linspace(VALUE_MIN, VALUE_MAX, 5)
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, 3)
    result["backdrop_quarters"] = [float((idx == q).mean()) for q in range(4)]
    result["backdrop_value_mean"] = float(values.mean())
    result["backdrop_value_outside_range"] = float(((values < VALUE_MIN - 0.03) | (values > VALUE_MAX + 0.03)).mean())

    # the window: preview vs final backdrop; steerability of a colour set at that moment
    window = {}
    for frac in fractions:
        policy = PreviewRulePolicy(random_colour_rule(seed))
        out = sample(pipe, base_q, seeds, policy=policy, mode="feedback", refinement_steps=[fraction_to_step(frac, steps)],
                     desc=f"g1 window {int(frac * 100)}%", **common)
        final = analyze_scenes(out.images)
        rewrites = [t.prompt_at(steps - 1) for t in out.trajectories]
        agree = [best_colour(p.backdrop_rgb) == best_colour(f.backdrop_rgb) for p, f in zip(policy.analyses, final, strict=True)]
        err = [abs(backdrop_value(p) - backdrop_value(f)) for p, f in zip(policy.analyses, final, strict=True)]
        steer = reward.from_analyses([parse(r) for r in rewrites], final)
        colour_mask = steer.asserted["colour"].numpy()
        window[f"{frac:.2f}"] = {"backdrop_agreement": float(np.mean(agree)), "backdrop_value_error": float(np.mean(err)),
                                 "colour_steerability": float(steer.breakdown["colour"].numpy()[colour_mask].mean())
                                 if colour_mask.any() else float("nan")}
    result["window"] = window
    passing = [f for f, w in window.items() if w["backdrop_agreement"] >= 0.90 and w["colour_steerability"] >= 0.80]
    result["window_fractions_passing"] = passing
    ci = result["backdrop_phrase"]["ci"]
    result["g1_checks"] = {
        "train_alignment>=0.85": result["train_alignment"] >= 0.85, "count>=0.85": result["count"] >= 0.85,
        "colour_followed>=0.90": result["colour_followed"] >= 0.90, "max_word_effect<=0.03": result["max_word_effect"] <= 0.03,
        "backdrop_phrase_at_chance": ci[0] <= 0.5 <= ci[1], "quarters>=0.15": min(result["backdrop_quarters"]) >= 0.15,
        "window": bool(passing)}
    result["g1_pass"] = all(result["g1_checks"].values())
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
