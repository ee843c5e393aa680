"""The paper's comparison on any pipeline, policy and reward (`promptloop eval compare --pipeline ... --policy ...`).

On the same prompts and the same seeds (one generator per (prompt, seed), so an image depends only on its prompt,
its seed and the policy, never on the batching), three rows:
- `base`: the plain pipeline on the prompt;
- `feed_forward`: one rewrite before sampling, used for every step (the policy itself in feed-forward mode, or a
  separate feed-forward adapter: `feed_forward_adapter`);
- `promptloop`: the policy with feedback, `refinements` rewrites at equally spaced steps, each from the x0 preview.
Every named reward (and their weighted total) is judged against the ORIGINAL prompt. Per row: the mean over prompts
(each prompt's images averaged first) with a 95 % bootstrap interval over prompts; per pair of rows the paired
difference with its interval. A trajectory grid of the first prompts shows, per prompt, the base image, the
feed-forward rewrite and image, then PromptLoop's previews with the prompt chosen from each and its final image.

Writes into `out`: `compare.json` (what `compare_pipeline` returns), `compare_grid.png`, and `samples.jsonl` (one
line per image: row, prompt, seed, the final prompt, every reward).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptloop.eval.figures import labelled_grid
from promptloop.world.fair import bootstrap_ci

ROWS = ("base", "feed_forward", "promptloop")
PAIRS = (("promptloop", "base"), ("promptloop", "feed_forward"), ("feed_forward", "base"))


def parse_rewards(specs: Sequence[str]) -> dict[str, float]:
    """`["imagereward", "clipscore=0.5"]` -> {"imagereward": 1.0, "clipscore": 0.5} (names checked by the registry)."""
    weights: dict[str, float] = {}
    for spec in specs:
        name, _, weight = spec.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"--reward {spec!r}: expected NAME or NAME=WEIGHT")
        try:
            weights[name] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--reward {spec!r}: the weight {weight!r} is not a number") from None
        if not np.isfinite(weights[name]):
            raise ValueError(f"--reward {spec!r}: the weight must be finite")
    return weights


def parse_reward_kwargs(text: str | None, weights: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """`--reward-kwargs '{"clipscore": {"model_name_or_path": "..."}}'`: options per reward, as in the training
    config's reward_kwargs."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--reward-kwargs: not valid JSON ({e.msg})") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError("--reward-kwargs: expected a JSON object of {reward name: {option: value}}")
    unknown = [k for k in value if k not in weights]
    if unknown:
        raise ValueError(f"--reward-kwargs: options for {unknown[0]!r}, which is not a --reward ({', '.join(weights)})")
    return value


def _per_prompt(scores: np.ndarray, n_prompts: int, seeds: int) -> np.ndarray:
    return scores.reshape(n_prompts, seeds).mean(axis=1)


def _stat(values: np.ndarray, seed: int) -> dict[str, Any]:
    lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean": float(values.mean()), "ci": [lo, hi]}


def compare_pipeline(
    pipeline: str = "world",
    policy: str = "world",
    rewards: Mapping[str, float] | None = None,
    prompts: str = "world:heldout",
    *,
    n: int | None = None,
    seeds_per_prompt: int = 1,
    seed: int = 0,
    steps: int = 20,
    guidance: float | None = None,
    refinements: int = 5,
    adapter: str | None = None,
    feed_forward_adapter: str | None = None,
    reward_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "auto",
    dtype: str = "float32",
    batch_size: int = 8,
    grid: int = 4,
    rewrite_first: bool = False,
    out: str | Path = "outputs/compare",
    progress: bool = True,
) -> dict[str, Any]:
    """Base vs feed-forward vs PromptLoop on `prompts` (see the module docstring); returns the summary dict."""
    from tqdm.auto import tqdm

    from promptloop.fs_errors import output_dir
    from promptloop.loop.sampler import PromptLoopSampler
    from promptloop.models import load_pipeline, load_policy
    from promptloop.policy.sanitize import token_length_fn
    from promptloop.rewards import CombinedReward
    from promptloop.train.data import load_prompts, skip_overlong_tokens
    from promptloop.validation import check_device
    from promptloop.world import get_world, is_world_reference, world_name_of_pipeline

    t0 = time.perf_counter()
    if steps < 2 or refinements < 1 or refinements > steps - 1:
        raise ValueError(f"--refine must be in 1..{steps - 1} for {steps} steps, got {refinements}")
    check_device(device)
    folder = output_dir(str(out), "--out")  # before any model is loaded
    world_name = world_name_of_pipeline(pipeline)  # the backbone's world (the default world for any other pipeline)
    if not rewards:  # that world's alignment
        rewards = {get_world(world_name).ALIGNMENT_REWARD: 1.0}
    weights = dict(rewards)
    reward = CombinedReward(weights, normalise=False, reward_kwargs=reward_kwargs).preflight()
    texts = load_prompts(prompts, limit=n, world=world_name)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if policy == "world" and adapter is None:  # the shipped world policies: GRPO for PromptLoop, its feed-forward twin
        from promptloop.eval.compare import FEED_FORWARD_ADAPTER, GRPO_ADAPTER

        adapter = str(GRPO_ADAPTER)
        feed_forward_adapter = feed_forward_adapter or str(FEED_FORWARD_ADAPTER)
    pipe, extra = load_pipeline(pipeline, dev, dtype=dtype)
    world = get_world(world_name) if is_world_reference(pipeline) else None  # a world backbone's: its guidance
    if world is not None and guidance is None:
        guidance = world.GUIDANCE
    policy_dtype = "auto" if dtype == "float32" else dtype
    main_policy = load_policy(policy, dev, dtype=policy_dtype, adapter_path=adapter)
    ff_policy = main_policy
    if feed_forward_adapter is not None:
        ff_policy = load_policy(policy, dev, dtype=policy_dtype, adapter_path=feed_forward_adapter)
    tokenizer = getattr(pipe, "tokenizer", None)
    for p in {id(main_policy): main_policy, id(ff_policy): ff_policy}.values():
        if tokenizer is not None and getattr(p, "prompt_length_fn", None) is None:
            p.prompt_length_fn = token_length_fn(tokenizer)
    if getattr(main_policy, "tokenizer", None) is not None:
        texts = skip_overlong_tokens(texts, main_policy.tokenizer)
        if not texts:
            raise ValueError(f"--prompts {prompts!r}: every prompt is over the length limits")
    queries = [q for q in texts for _ in range(seeds_per_prompt)]
    seeds = [seed * 1_000_003 + 17 * i + j for i in range(len(texts)) for j in range(seeds_per_prompt)]
    sampler = PromptLoopSampler(pipe, None)
    plan = {"base": (None, "none"), "feed_forward": (ff_policy, "feed-forward"), "promptloop": (main_policy, "feedback")}
    scores: dict[str, dict[str, np.ndarray]] = {}
    outputs: dict[str, tuple[list[Any], list[Any]]] = {}
    seconds: dict[str, float] = {}
    fallback: dict[str, float] = {}
    for row, (row_policy, mode) in plan.items():
        torch.manual_seed(seed)  # the policies sample from the global generator
        r0 = time.perf_counter()
        images: list[Any] = []
        trajectories: list[Any] = []
        for start in tqdm(range(0, len(queries), batch_size), desc=f"compare {row}", disable=not progress, leave=False):
            q = queries[start: start + batch_size]
            gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds[start: start + batch_size]]
            kw: dict[str, Any] = dict(extra)
            if mode == "feedback":
                kw.update(num_refinements=refinements, rewrite_first=rewrite_first)
            if guidance is not None:
                kw["guidance_scale"] = guidance
            result = sampler(q, policy=row_policy, mode=mode, num_inference_steps=steps, generator=gens,  # type: ignore[arg-type]
                             output_type="pil", **kw)
            images.extend(result.images)
            trajectories.extend(result.trajectories)
        seconds[row] = time.perf_counter() - r0
        with torch.no_grad():
            scored = reward.evaluate(images, queries)
        scores[row] = {k: v.detach().float().cpu().numpy() for k, v in scored.items()}
        outputs[row] = (images, trajectories)
        flags = [r.fallback for t in trajectories for r in t.refinements]
        if flags:
            fallback[row] = sum(flags) / len(flags)

    n_prompts = len(texts)
    keys = list(scores["base"])
    summary: dict[str, Any] = {
        "pipeline": pipeline, "policy": policy, "adapter": adapter, "feed_forward_adapter": feed_forward_adapter,
        "rewards": weights, "prompts": prompts, "n": n_prompts, "seeds_per_prompt": seeds_per_prompt, "seed": seed,
        "steps": steps, "guidance": guidance, "refinements": refinements, "rewrite_first": rewrite_first,
        "skipped_prompts": len(texts.skipped),
        "rows": {row: {k: _stat(_per_prompt(scores[row][k], n_prompts, seeds_per_prompt), seed) for k in keys}
                 for row in ROWS},
        "differences": {
            f"{a}_minus_{b}": {k: _stat(_per_prompt(scores[a][k] - scores[b][k], n_prompts, seeds_per_prompt), seed)
                               for k in keys}
            for a, b in PAIRS},
        "fallback_rate": fallback,
        "seconds": seconds,
    }
    with (folder / "samples.jsonl").open("w") as fh:
        for row in ROWS:
            for i, traj in enumerate(outputs[row][1]):
                fh.write(json.dumps({"row": row, "prompt": queries[i], "seed": seeds[i],
                                     "final_prompt": traj.final_prompt,
                                     "rewards": {k: float(scores[row][k][i]) for k in keys}}) + "\n")
    if grid > 0:
        summary["grid"] = str(_grid(outputs, scores, queries, seeds_per_prompt, min(grid, n_prompts), refinements,
                                    folder / "compare_grid.png"))
    summary["total_seconds"] = time.perf_counter() - t0
    (folder / "compare.json").write_text(json.dumps(summary, indent=1))
    return summary


def _grid(outputs: Mapping[str, tuple[list[Any], list[Any]]], scores: Mapping[str, Mapping[str, np.ndarray]],
          queries: Sequence[str], seeds_per_prompt: int, n_rows: int, refinements: int, path: Path) -> Path:
    """Per prompt (its first seed): base | feed-forward | PromptLoop's previews with the prompts chosen | final."""
    images: list[Any] = []
    labels: list[str] = []
    columns = 3 + refinements
    for p in range(n_rows):
        i = p * seeds_per_prompt
        total = {row: float(scores[row]["total"][i]) for row in ROWS}
        base_img, ff_img = outputs["base"][0][i], outputs["feed_forward"][0][i]
        ff_traj = outputs["feed_forward"][1][i]
        images += [base_img, ff_img]
        labels += [f"base [{total['base']:.3f}]: {queries[i]}",
                   f"feed-forward [{total['feed_forward']:.3f}]: {ff_traj.final_prompt}"]
        traj = outputs["promptloop"][1][i]
        cells = [(r.preview, f"{r.progress:.0%}: {r.prompt}") for r in traj.refinements if r.preview is not None]
        cells += [(None, "")] * (refinements - len(cells))
        for img, label in cells[:refinements]:
            images.append(img if img is not None else np.full((8, 8, 3), 255, dtype=np.uint8))
            labels.append(label)
        images.append(outputs["promptloop"][0][i])
        labels.append(f"PromptLoop [{total['promptloop']:.3f}]: {traj.final_prompt}")
    return labelled_grid(images, labels, path, columns=columns, cell=160, wrap=26, lines=8)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The comparison as a table (rows x rewards, mean [95 % CI]) and the paired differences."""
    keys = list(summary["rows"]["base"])
    lines = ["| row | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for row in ROWS:
        cells = [f"{s['mean']:.4f} [{s['ci'][0]:.4f}, {s['ci'][1]:.4f}]" for s in (summary["rows"][row][k] for k in keys)]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    for name, diff in summary["differences"].items():
        cells = [f"{s['mean']:+.4f} [{s['ci'][0]:+.4f}, {s['ci'][1]:+.4f}]" for s in (diff[k] for k in keys)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["PAIRS", "ROWS", "compare_pipeline", "format_summary", "parse_reward_kwargs", "parse_rewards"]
