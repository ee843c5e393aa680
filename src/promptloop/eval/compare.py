"""Honest comparison on heldout queries (`promptloop eval compare`).

Mean alignment of the final image with the ORIGINAL query, on the same `n` heldout queries and the
same seeds, for:
- `base`: the plain backbone on the query;
- `feed_forward`: one rewrite before sampling by a feed-forward rewriter GRPO-trained with the same
  rollout budget (assets/world/policy_feedforward);
- `promptloop_no_feedback`: the GRPO policy, all N_R prompts produced before sampling;
- `promptloop`: the GRPO policy with feedback, N_R refinements equally spaced (the method); with
  `rewrite_first` the feedback rows also rewrite the query once before sampling;
- `promptloop_sft`: the same loop with the SFT policy before any RL (the "untrained rewriter" row);
- `feed_forward_then_promptloop`: the feed-forward rewriter's rewrite before sampling, then the GRPO
  policy's N_R feedback refinements on top (does feedback add to a strong up-front prompt?).
The proxy reward of every row is reported too (`proxy_*`): an over-optimisation monitor.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from promptloop.policy.base import StagedPolicy
from promptloop.policy.sanitize import token_length_fn
from promptloop.rewards import get_reward
from promptloop.world import world_of_backbone
from promptloop.world.backbone import DEFAULT_BACKBONE, load_backbone
from promptloop.world.sampling import sample

ASSETS = DEFAULT_BACKBONE.parent
GRPO_ADAPTER = ASSETS / "policy_grpo"
FEED_FORWARD_ADAPTER = ASSETS / "policy_feedforward"


def load_world_policy(adapter: str | Path | None, pipe: Any) -> Any:
    """The shipped SFT world policy, with a LoRA adapter on top when given."""
    from promptloop.policy.vlm import VLMPolicy

    base = ASSETS / "policy"
    if not base.is_dir():
        raise FileNotFoundError(f"world policy not found at {base}")
    if adapter is not None and not Path(adapter).is_dir():
        raise FileNotFoundError(f"policy adapter not found at {adapter}")
    policy = VLMPolicy.from_pretrained(base, adapter_path=adapter)
    policy.prompt_length_fn = token_length_fn(pipe.tokenizer)
    return policy


def compare(n: int = 256, seed: int = 0, steps: int = 20, guidance: float | None = None, refinements: int = 5,
            grpo_adapter: str | Path | None = None, feed_forward_adapter: str | Path | None = None,
            include_sft: bool = True, rewrite_first: bool = False, progress: bool = True) -> dict[str, Any]:
    if refinements > steps - 1:
        raise ValueError(f"--refine {refinements} is more than the {steps - 1} refinements {steps} steps allow")
    for flag, adapter in (("--adapter", grpo_adapter), ("--feed-forward-adapter", feed_forward_adapter)):
        if adapter is not None and not Path(adapter).expanduser().is_dir():  # before the backbone loads
            raise FileNotFoundError(f"{flag} {adapter}: no such adapter folder")
    t0 = time.perf_counter()
    pipe = load_backbone()
    world = world_of_backbone()  # the shipped backbone's world: its prompts, guidance and alignment reward
    guidance = world.GUIDANCE if guidance is None else guidance
    alignment, proxy = get_reward(world.ALIGNMENT_REWARD), get_reward("proxy")
    items = world.sample_prompts("heldout", n, seed)
    queries = [it.caption for it in items]
    seeds = [seed * 1_000_003 + 17 * i for i in range(n)]
    grpo = load_world_policy(grpo_adapter or GRPO_ADAPTER, pipe)
    feed_forward = load_world_policy(feed_forward_adapter or FEED_FORWARD_ADAPTER, pipe)
    rows: dict[str, tuple[Any, str, bool]] = {
        "base": (None, "none", False),
        "feed_forward": (feed_forward, "feed-forward", False),
        "promptloop_no_feedback": (grpo, "no-feedback", False),
        "promptloop": (grpo, "feedback", rewrite_first),
    }
    if include_sft:
        rows["promptloop_sft"] = (load_world_policy(None, pipe), "feedback", rewrite_first)
    rows["feed_forward_then_promptloop"] = (StagedPolicy(feed_forward, grpo), "feedback", True)
    result: dict[str, Any] = {"n": n, "seed": seed, "steps": steps, "guidance": guidance, "refinements": refinements,
                              "rewrite_first": rewrite_first}
    fallback: dict[str, float] = {}
    for name, (policy, mode, first) in rows.items():
        torch.manual_seed(seed)  # the policy samples from the global generator
        out = sample(pipe, queries, seeds, policy=policy, mode=mode, steps=steps, guidance=guidance,
                     num_refinements=refinements if mode in ("feedback", "no-feedback") else None,
                     rewrite_first=first, progress=progress, desc=f"compare {name}")
        result[name] = float(alignment(out.images, queries).scores.mean())
        result[f"proxy_{name}"] = float(proxy(out.images, queries).scores.mean())
        flags = [r.fallback for t in out.trajectories for r in t.refinements]
        if flags:
            fallback[name] = sum(flags) / len(flags)
    result["fallback_rate"] = fallback
    result["promptloop_minus_base"] = result["promptloop"] - result["base"]
    result["promptloop_minus_feed_forward"] = result["promptloop"] - result["feed_forward"]
    result["seconds"] = time.perf_counter() - t0
    return result
