"""Supervised fine-tuning and evaluation of the Shapes-world refinement policy.

The policy is a tiny LLaVA-style VLM (CLIP vision tower on 32 px previews, patch 8: 16 image tokens;
Llama LM) with the world's word-level tokenizer (`policy_data.build_world_tokenizer`) and a short
instruction (`WORLD_INSTRUCTION`). SFT minimises the negative log-likelihood of the synthetic target
rewrites (`policy_data.make_example`: near-copies of the user query with a few fact-keeping edits
conditioned on the preview's error) computed through `VLMPolicy.logprobs` — the very code path GRPO
uses later — at temperature 1. Rewrites are length-checked in the backbone's text window
(`policy_data.minilm_length`, at most `MAX_PROMPT_TOKENS` = 48 MiniLM word pieces).

Decoding constraint. The policy samples under `copy_constraint.CopyEditConstraint`: a rewrite is the
user query's own words, in order, with edit phrases (intensifier, repeated colour, size, position,
background) inserted. Every SFT target lies in that language (tested), so the constraint only removes
what the small model gets wrong on its own — mostly binding a colour word to the wrong object, which broke
half of its unconstrained samples (valid 0.485, keeps 0.354 at T = 1). SFT itself is unconstrained
(plain next-token likelihood); `build_world_policy` attaches the constraint, saved with the policy, so
`propose`, `logprobs` and GRPO all use it. Pass `constrained=False` to measure the raw model.

Reproduce the shipped policy (assets/world/policy), one SFT stage from scratch (`RECIPE`, about 15 min on
2 cores) and the held-out evaluation (`evaluate_world_policy(out, n=100, seed=1)`, 8 raw samples per
query at T = 1)::

    promptloop world train-policy --json                       # or, in Python:
    from promptloop.world.shapes.train_policy import reproduce_world_policy
    reproduce_world_policy("assets/world/policy")
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from promptloop.policy.base import PolicyInput
from promptloop.policy.vlm import VLMPolicy
from promptloop.world.policy_model import WORLD_INSTRUCTION, llava_model, llava_processor
from promptloop.world.policy_sft import sft_loop
from promptloop.world.shapes import grammar
from promptloop.world.shapes.copy_constraint import CopyEditConstraint
from promptloop.world.shapes.policy_data import (
    PREVIEW_SIZE,
    TEXT_WINDOW,
    build_world_tokenizer,
    caption_keeps_query,
    corrupt,
    degrade,
    make_example,
    minilm_length,
    render_objects,
)
from promptloop.world.shapes.scene import SceneSampler

PROGRESS_LEVELS = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8)
MAX_PROMPT_TOKENS = TEXT_WINDOW  # the world backbone's text window: 48 MiniLM word pieces (`minilm_length`)
MAX_NEW_TOKENS = 56  # world-tokenizer words; the longest SFT target is about 42 with its end token


def build_world_policy(
    seed: int = 0, hidden: int = 256, layers: int = 6, heads: int = 8, vision_hidden: int = 128,
    vision_layers: int = 2, image_size: int = PREVIEW_SIZE, patch_size: int = 8, tie_embeddings: bool = False,
    constrained: bool = True,
) -> VLMPolicy:
    """A randomly initialised world policy (about 5M parameters with the defaults), decoding under
    `CopyEditConstraint` unless `constrained` is False."""
    tokenizer = build_world_tokenizer()
    model = llava_model(tokenizer, image_size=image_size, patch_size=patch_size, hidden=hidden, layers=layers,
                        vision_hidden=vision_hidden, vision_layers=vision_layers, heads=heads, seed=seed,
                        tie_embeddings=tie_embeddings)
    processor = llava_processor(tokenizer, image_size=image_size, patch_size=patch_size)
    return VLMPolicy(model, tokenizer, processor, instruction=WORLD_INSTRUCTION, temperature=1.0,
                     max_new_tokens=MAX_NEW_TOKENS, max_prompt_tokens=MAX_PROMPT_TOKENS, prompt_length_fn=minilm_length,
                     image_size=image_size, validator=grammar.parse,
                     constraint=CopyEditConstraint(tokenizer) if constrained else None)


def _batch(rng: random.Random, sampler: SceneSampler, batch_size: int, p_no_preview: float
           ) -> tuple[PolicyInput, list[str]]:
    progress = rng.choice(PROGRESS_LEVELS)
    with_preview = rng.random() >= p_no_preview
    exs = [make_example(sampler.sample(), rng, progress=progress, with_preview=with_preview)
           for _ in range(batch_size)]
    previews = [e.preview for e in exs] if with_preview else None
    inp = PolicyInput([e.query_text for e in exs], [e.current_prompt for e in exs], progress, previews)
    return inp, [e.target for e in exs]


def train_world_policy(
    out_dir: str | Path,
    steps: int = 1200,
    seed: int = 0,
    batch_size: int = 16,
    lr: float = 1e-3,
    warmup: int = 50,
    split: str = "train",
    p_no_preview: float = 0.15,
    save_dtype: torch.dtype | None = torch.float16,
    num_threads: int | None = 1,
    progress_bar: bool = True,
    init_from: str | Path | None = None,
    log_every: int = 100,
    **model_kwargs: Any,
) -> dict[str, Any]:
    """SFT of a fresh world policy on synthetic rewrites; saves it to `out_dir` (safetensors, tokenizer,
    processor, promptloop_policy.json) so that `VLMPolicy.from_pretrained(out_dir)` loads it.

    `init_from` continues from a saved policy instead of a fresh initialisation (a second SFT stage).
    Returns a summary (steps, final loss, parameters, wall time)."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    sampler = SceneSampler(seed, split)  # type: ignore[arg-type]
    if init_from is not None:
        policy = VLMPolicy.from_pretrained(init_from, dtype=torch.float32)
    else:
        policy = build_world_policy(seed=seed, **model_kwargs)
    n_params = sum(p.numel() for p in policy.model.parameters())
    trained = sft_loop(policy, lambda: _batch(rng, sampler, batch_size, p_no_preview), steps=steps, lr=lr,
                       warmup=warmup, progress_bar=progress_bar, log_every=log_every)
    policy.save_pretrained(out_dir, dtype=save_dtype)
    summary = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "split": split,
        "final_loss": trained["final_loss"], "params": n_params,
        "sft_wall_s": trained["sft_wall_s"], "save_dtype": str(save_dtype),
        "init_from": str(init_from) if init_from is not None else None, "model": model_kwargs,
        "warmup": warmup, "loss_curve": trained["loss_curve"],
    }
    (Path(out_dir) / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def evaluate_world_policy(
    policy_dir: str | Path | VLMPolicy,
    n: int = 200,
    seed: int = 1,
    samples_per_query: int = 8,
    temperature: float = 1.0,
    split: str = "heldout",
    queries_per_batch: int = 4,
    num_threads: int | None = 1,
) -> dict[str, float]:
    """Sample `samples_per_query` rewrites of `n` held-out-style queries (SceneSampler(seed, split) scenes,
    the user query as current prompt, a corrupted degraded preview) and measure on the RAW outputs:

    - ``valid``: fraction that parse under the world grammar;
    - ``keeps``: fraction that parse and keep every fact of the query;
    - ``distinct``: mean number of distinct rewrites among the samples of a query;
    - ``fallback``: fraction flagged as fallback by the policy's sanitation;
    - ``changed``: fraction whose accepted prompt differs from the current prompt.
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    policy = policy_dir if isinstance(policy_dir, VLMPolicy) else VLMPolicy.from_pretrained(policy_dir)
    rng = random.Random(seed)
    sampler = SceneSampler(seed, split)  # type: ignore[arg-type]
    n_valid = n_keep = n_fb = n_changed = total = 0
    distinct: list[int] = []
    done = 0
    while done < n:
        m = min(queries_per_batch, n - done)
        progress = rng.choice(PROGRESS_LEVELS)
        queries, texts, previews = [], [], []
        for _ in range(m):
            scene = sampler.sample()
            q = grammar.query_from_scene(scene, rng)
            objs, bg, _, _ = corrupt(scene, q, rng)
            queries.append(q)
            texts.append(grammar.realise(q, rng))
            previews.append(degrade(render_objects(objs, bg), rng))
        k = samples_per_query
        inp = PolicyInput([t for t in texts for _ in range(k)], [t for t in texts for _ in range(k)], progress,
                          [p for p in previews for _ in range(k)])
        out = policy.propose(inp, temperature=temperature, seed=rng.randrange(2**31))
        for j in range(m):
            raws = out.raw_texts[j * k: (j + 1) * k]
            for i, raw in enumerate(raws):
                ok, keeps = caption_keeps_query(raw, queries[j])
                n_valid += ok
                n_keep += keeps
                n_fb += out.fallback[j * k + i]
                n_changed += out.prompts[j * k + i] != texts[j]
                total += 1
            distinct.append(len(set(raws)))
        done += m
    return {
        "n_queries": n, "samples_per_query": samples_per_query, "valid": n_valid / total, "keeps": n_keep / total,
        "distinct": sum(distinct) / len(distinct), "fallback": n_fb / total, "changed": n_changed / total,
    }


# ----------------------------------------------------------------------------- reproduction and CLI

DEFAULT_OUT = Path(__file__).resolve().parents[4] / "assets" / "world" / "policy"
RECIPE: dict[str, Any] = {"steps": 2000, "batch_size": 32, "lr": 2e-3, "warmup": 50, "split": "any", "hidden": 192,
                          "layers": 4, "heads": 6, "tie_embeddings": True}


def reproduce_world_policy(
    out_dir: str | Path = DEFAULT_OUT, steps: int | None = None, seed: int = 0, eval_n: int = 100, eval_seed: int = 1,
    num_threads: int | None = 2, progress_bar: bool = True,
) -> dict[str, Any]:
    """The shipped world policy's recipe (`RECIPE`, one SFT stage from scratch) then its evaluation
    (`evaluate_world_policy(out_dir, n=eval_n, seed=eval_seed)` at T = 1); the evaluation is added to
    `train_summary.json` and returned with the training summary."""
    recipe = dict(RECIPE)
    if steps is not None:
        recipe["steps"] = steps
    summary = train_world_policy(out_dir, seed=seed, num_threads=num_threads, progress_bar=progress_bar, **recipe)
    t0 = time.time()
    ev = evaluate_world_policy(out_dir, n=eval_n, seed=eval_seed, num_threads=num_threads)
    ev["eval_wall_s"] = round(time.time() - t0, 1)
    summary[f"eval_heldout_n{eval_n}_seed{eval_seed}_T1"] = ev
    (Path(out_dir) / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
