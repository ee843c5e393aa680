"""The Backdrops-world refinement policy: build, SFT on random colour fills, and measure what it does not know.

The policy is the worlds' tiny LLaVA-style VLM (`world.policy_model`: a CLIP vision tower on 32 px previews,
patch 8, 16 image tokens; a Llama LM), smaller than the Shapes world's since its language is smaller, with the
world's word-level tokenizer (`policy_data.world_words`) and the worlds' short instruction. It decodes under
`ColourFillConstraint` (the query's words plus a colour word before each open shape), saved with it, so
`propose`, `logprobs` and GRPO use it. SFT (`world.policy_sft.sft_loop`) is on `policy_data.make_example`'s random
fills: the SFT policy picks colours regardless of the preview. `evaluate_backdrops_policy` measures that: on dark
and on light backdrops its colours' mean luminance must not differ (a CI), while validity and fill rates are high.

Reproduce the shipped policy (assets/world/backdrops/policy) and its evaluation::

    promptloop world train-policy --world v3 --json
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptloop.policy.base import PolicyInput
from promptloop.policy.vlm import VLMPolicy
from promptloop.world.backdrops.colour_constraint import ColourFillConstraint
from promptloop.world.backdrops.grammar import ParseError, parse, query_from_scene, realise
from promptloop.world.backdrops.legibility import relative_luminance
from promptloop.world.backdrops.policy_data import (
    P_NO_PREVIEW,
    PREVIEW_SIZE,
    PROGRESS_LEVELS,
    QUERY_P_COLOUR,
    QUERY_P_POSITION,
    QUERY_P_RELATION,
    keeps_query_facts,
    make_example,
    preview_like,
    world_words,
)
from promptloop.world.backdrops.render import render
from promptloop.world.backdrops.scene import COLOURS, Scene, SceneSampler
from promptloop.world.fair import bootstrap_ci
from promptloop.world.policy_model import (
    TEXT_WINDOW,
    WORLD_INSTRUCTION,
    llava_model,
    llava_processor,
    minilm_length,
    word_level_tokenizer,
)
from promptloop.world.policy_sft import sft_loop

MAX_NEW_TOKENS = 40  # world-tokenizer words; the longest rewrite is about 30 with its end token
DEFAULT_OUT = Path(__file__).resolve().parents[4] / "assets" / "world" / "backdrops" / "policy"
RECIPE: dict[str, Any] = {"steps": 800, "batch_size": 32, "lr": 2e-3, "warmup": 40, "hidden": 128, "layers": 2,
                          "heads": 4, "vision_hidden": 64, "vision_layers": 2, "tie_embeddings": True}


def build_tokenizer() -> Any:
    """The Backdrops world policy's word-level tokenizer."""
    return word_level_tokenizer(world_words())


def build_backdrops_policy(seed: int = 0, hidden: int = 128, layers: int = 2, heads: int = 4, vision_hidden: int = 64,
                           vision_layers: int = 2, tie_embeddings: bool = True, constrained: bool = True) -> VLMPolicy:
    """A randomly initialised Backdrops-world policy, decoding under `ColourFillConstraint` unless not
    `constrained`."""
    tokenizer = build_tokenizer()
    model = llava_model(tokenizer, image_size=PREVIEW_SIZE, patch_size=8, hidden=hidden, layers=layers,
                        vision_hidden=vision_hidden, vision_layers=vision_layers, heads=heads, seed=seed,
                        tie_embeddings=tie_embeddings)
    processor = llava_processor(tokenizer, image_size=PREVIEW_SIZE, patch_size=8)
    return VLMPolicy(model, tokenizer, processor, instruction=WORLD_INSTRUCTION, temperature=1.0,
                     max_new_tokens=MAX_NEW_TOKENS, max_prompt_tokens=TEXT_WINDOW, prompt_length_fn=minilm_length,
                     image_size=PREVIEW_SIZE, validator=parse,
                     constraint=ColourFillConstraint(tokenizer) if constrained else None)


def _batch(rng: random.Random, sampler: SceneSampler, batch_size: int) -> tuple[PolicyInput, list[str]]:
    progress = rng.choice(PROGRESS_LEVELS)
    with_preview = rng.random() >= P_NO_PREVIEW
    exs = [make_example(sampler.sample(), rng, with_preview=with_preview) for _ in range(batch_size)]
    previews = [e.preview for e in exs] if with_preview else None
    return PolicyInput([e.query_text for e in exs], [e.current_prompt for e in exs], progress, previews), \
        [e.target for e in exs]


def train_backdrops_policy(out_dir: str | Path, steps: int = RECIPE["steps"], seed: int = 0,
                           batch_size: int = RECIPE["batch_size"], lr: float = RECIPE["lr"],
                           warmup: int = RECIPE["warmup"], num_threads: int | None = 1, progress_bar: bool = True,
                           save_dtype: torch.dtype | None = torch.float16, **model_kwargs: Any) -> dict[str, Any]:
    """SFT of a fresh Backdrops-world policy (module docstring); saved to `out_dir` (`VLMPolicy.save_pretrained`).
    Returns a summary (steps, final loss, parameters, wall time)."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    sampler = SceneSampler(seed)
    sizes = {k: RECIPE[k] for k in ("hidden", "layers", "heads", "vision_hidden", "vision_layers", "tie_embeddings")}
    sizes.update(model_kwargs)
    policy = build_backdrops_policy(seed=seed, **sizes)
    n_params = sum(p.numel() for p in policy.model.parameters())
    trained = sft_loop(policy, lambda: _batch(rng, sampler, batch_size), steps=steps, lr=lr, warmup=warmup,
                       progress_bar=progress_bar, desc="v3 policy SFT")
    policy.save_pretrained(out_dir, dtype=save_dtype)
    summary = {"world": "backdrops", "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
               "warmup": warmup, "params": n_params, "model": sizes, "save_dtype": str(save_dtype), **trained}
    (Path(out_dir) / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _scene_over(sampler: SceneSampler, light: bool) -> Scene:
    """A scene of `sampler` whose backdrop is in the lighter (value > 0.6) or, with `light` False, the darker
    (value < 0.4) part of the range."""
    while True:
        scene = sampler.sample()
        if (scene.backdrop.value > 0.6) if light else (scene.backdrop.value < 0.4):
            return scene


def evaluate_backdrops_policy(policy_dir: str | Path | VLMPolicy, n: int = 128, seed: int = 1,
                              samples_per_query: int = 4, temperature: float = 1.0, progress: float = 0.15,
                              num_threads: int | None = 1) -> dict[str, Any]:
    """Sample rewrites of `n` queries (half over dark backdrops, half over light ones; preview-like renders at
    `progress`) and measure on the RAW outputs: ``valid`` (parses), ``keeps`` (parses to the query's facts, the
    open colours aside), ``filled`` (share of open colours given a colour), ``colour_share`` (how often each colour
    is chosen), and what the choice knows of the backdrop: ``luminance_gap`` = mean relative luminance of the colours
    chosen on dark backdrops minus on light ones, with a 95 % bootstrap CI over queries (about 0 for a policy that
    does not read the backdrop; positive when it picks light colours on dark backdrops)."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    policy = policy_dir if isinstance(policy_dir, VLMPolicy) else VLMPolicy.from_pretrained(policy_dir)
    rng = random.Random(seed)
    sampler = SceneSampler(seed)
    lum = {c: float(relative_luminance(np.asarray(rgb, dtype=np.float64) / 255.0)) for c, rgb in COLOURS.items()}
    counts = dict.fromkeys(COLOURS, 0)
    n_valid = n_keep = n_open = n_filled = total = 0
    per_query: dict[bool, list[float]] = {False: [], True: []}
    k = samples_per_query
    for i in range(n):
        light = i % 2 == 1
        scene = _scene_over(sampler, light)
        query = query_from_scene(scene, rng, p_colour=QUERY_P_COLOUR, p_position=QUERY_P_POSITION,
                                 p_relation=QUERY_P_RELATION)
        while query.open_colours() == 0:
            query = query_from_scene(scene, rng, p_colour=QUERY_P_COLOUR)
        text = realise(query)
        preview = preview_like(render(scene), rng)
        out = policy.propose(PolicyInput([text] * k, [text] * k, progress, [preview] * k), temperature=temperature,
                             seed=rng.randrange(2**31))
        chosen: list[float] = []
        for raw in out.raw_texts:
            total += 1
            try:
                got = parse(raw)
            except ParseError:
                continue
            n_valid += 1
            n_keep += keeps_query_facts(query, got)
            for g, o in zip(got.objects, query.objects, strict=False):
                if o.colour is None:
                    n_open += 1
                    if g.colour is not None:
                        n_filled += 1
                        counts[g.colour] += 1
                        chosen.append(lum[g.colour])
        if chosen:
            per_query[light].append(float(np.mean(chosen)))
    dark, light_ = np.asarray(per_query[False]), np.asarray(per_query[True])
    m = min(len(dark), len(light_))
    diffs = dark[:m] - light_[:m]  # query pairs: one over a dark backdrop, one over a light one
    gap = float(diffs.mean())
    lo, hi = bootstrap_ci(diffs, seed=seed)
    n_chosen = max(1, sum(counts.values()))
    return {"n_queries": n, "samples_per_query": k, "progress": progress, "valid": n_valid / total,
            "keeps": n_keep / total, "filled": n_filled / max(1, n_open),
            "colour_share": {c: round(v / n_chosen, 3) for c, v in counts.items()},
            "luminance_gap": round(gap, 4), "luminance_gap_ci": [round(lo, 4), round(hi, 4)]}


def reproduce_backdrops_policy(out_dir: str | Path = DEFAULT_OUT, steps: int | None = None, seed: int = 0,
                               num_threads: int | None = 1, progress_bar: bool = True) -> dict[str, Any]:
    """The shipped recipe (`RECIPE`) then `evaluate_backdrops_policy` (added to train_summary.json)."""
    summary = train_backdrops_policy(out_dir, steps=RECIPE["steps"] if steps is None else steps, seed=seed,
                                     num_threads=num_threads, progress_bar=progress_bar)
    t0 = time.time()
    summary["eval"] = evaluate_backdrops_policy(out_dir, num_threads=num_threads)
    summary["eval"]["eval_wall_s"] = round(time.time() - t0, 1)
    (Path(out_dir) / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = ["DEFAULT_OUT", "RECIPE", "build_backdrops_policy", "build_tokenizer", "evaluate_backdrops_policy",
           "reproduce_backdrops_policy", "train_backdrops_policy"]
