"""Honest comparison on an embedded world's heldout queries (`promptloop eval compare [--world NAME]`).

The world's task reward of the final image, judged against the ORIGINAL query (its `TASK_REWARD` where it declares
one, e.g. v3's `backdrops_legible`; else its alignment), on the same `n` heldout queries and the same seeds, for:
- `base`: the plain backbone on the query;
- `feed_forward`: one rewrite before sampling by the feed-forward rewriter GRPO-trained with the same rollout
  budget (the world's `feed-forward` adapter);
- `promptloop_no_feedback`: all N_R prompts produced before sampling, by the policy GRPO-trained that way (the
  world's `no-feedback` adapter; a world without one: the feedback policy run without previews);
- `promptloop`: the GRPO feedback policy, N_R refinements equally spaced (the method); with `rewrite_first` the
  feedback rows also rewrite the query once before sampling;
- `promptloop_sft`: the same loop with the SFT policy before any RL (the "untrained rewriter" row);
- `feed_forward_then_promptloop`: the feed-forward rewrite before sampling, then the feedback refinements;
- `feed_forward_equal_compute` (`equal_compute`): the feed-forward rewriter with its sampling steps raised until
  its wall time matches the `promptloop` row's (measured here, in this process).
Each row has a 95 % bootstrap CI over queries (`ci`), the margins between rows paired CIs; the world's alignment
(where the task reward is another) and the proxy reward of every row are reported too: over-optimisation monitors.
The world's adapters sit beside its policy (`DEFAULT_POLICY`), named by its `POLICY_ADAPTERS` (mode -> folder).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from promptloop.policy.base import StagedPolicy
from promptloop.policy.sanitize import token_length_fn
from promptloop.rewards import get_reward
from promptloop.world import get_world, task_reward_name, world_of_backbone
from promptloop.world.backbone import DEFAULT_BACKBONE, load_backbone
from promptloop.world.fair import bootstrap_ci
from promptloop.world.sampling import sample

ASSETS = DEFAULT_BACKBONE.parent
GRPO_ADAPTER = ASSETS / "policy_grpo"  # the default world's feedback adapter
FEED_FORWARD_ADAPTER = ASSETS / "policy_feedforward"  # the default world's feed-forward adapter
MAX_EQUAL_COMPUTE_STEPS = 400  # the equal-compute row's sampling steps are capped here


class WorldPolicyError(FileNotFoundError):
    """A world without a shipped refinement policy (no `DEFAULT_POLICY`, or its folder is missing)."""


def world_policy_folder(world: ModuleType) -> Path:
    """The folder of `world`'s shipped refinement policy (its `DEFAULT_POLICY`); `WorldPolicyError` if it has none."""
    try:
        folder = world.DEFAULT_POLICY
    except AttributeError:
        raise WorldPolicyError(f"world {world.NAME} ({world.VERSION}) declares no shipped policy (DEFAULT_POLICY)") \
            from None
    if not Path(folder).is_dir():
        raise WorldPolicyError(f"world {world.NAME} ({world.VERSION}): its policy folder {folder} does not exist "
                               f"(train it with `promptloop world train-policy --world {world.VERSION}`)")
    return Path(folder)


def world_and_backbone(world: str | None, backbone: str | Path | None) -> tuple[ModuleType, Path]:
    """(the world, the backbone folder to sample): `world`'s shipped backbone, or `backbone`, which must then be a
    backbone of that world (ValueError otherwise); with no world given, the backbone's own world (the default
    world's shipped backbone when neither is given)."""
    w = get_world(world) if world is not None else world_of_backbone(backbone)
    folder = Path(backbone) if backbone is not None else Path(w.DEFAULT_BACKBONE)
    if world is not None and backbone is not None and (other := world_of_backbone(folder)).NAME != w.NAME:
        raise ValueError(f"--backbone {folder} is a backbone of world {other.NAME}, not {w.NAME}")
    return w, folder


def heldout_queries(world: ModuleType, n: int, seed: int) -> tuple[list[str], list[int]]:
    """`n` heldout queries of the world and one sampling seed each (the same for every row of a comparison)."""
    return ([it.caption for it in world.sample_prompts("heldout", n, seed)],
            [seed * 1_000_003 + 17 * i for i in range(n)])


def world_adapter(world: ModuleType, mode: str) -> Path | None:
    """The folder of the world's shipped adapter trained in `mode` (feedback, no-feedback, feed-forward); None when
    the world declares none."""
    folder = getattr(world, "POLICY_ADAPTERS", {}).get(mode)
    return None if folder is None else Path(world.DEFAULT_POLICY).parent / folder


def check_adapter_folder(flag: str, adapter: str | Path | None) -> None:
    """FileNotFoundError naming `flag` when `adapter` is given but is no folder (checked before a backbone loads)."""
    if adapter is not None and not Path(adapter).expanduser().is_dir():
        raise FileNotFoundError(f"{flag} {adapter}: no such adapter folder")


def load_world_policy(adapter: str | Path | None, pipe: Any, world: ModuleType | None = None,
                      temperature: float | None = None) -> Any:
    """The world's shipped SFT policy (the default world's when None), with a LoRA adapter on top when given;
    `temperature` replaces its saved sampling temperature (0: greedy decoding)."""
    from promptloop.policy.vlm import VLMPolicy

    base = world_policy_folder(get_world() if world is None else world)
    if adapter is not None and not Path(adapter).is_dir():
        raise FileNotFoundError(f"policy adapter not found at {adapter}")
    policy = VLMPolicy.from_pretrained(base, adapter_path=adapter)
    if temperature is not None:
        policy.temperature = temperature
    policy.prompt_length_fn = token_length_fn(pipe.tokenizer)
    return policy


def _ci(values: np.ndarray, seed: int) -> list[float]:
    lo, hi = bootstrap_ci(values, seed=seed)
    return [float(lo), float(hi)]


def compare(n: int = 256, seed: int = 0, steps: int = 20, guidance: float | None = None, refinements: int = 5,
            grpo_adapter: str | Path | None = None, feed_forward_adapter: str | Path | None = None,
            no_feedback_adapter: str | Path | None = None, include_sft: bool = True, rewrite_first: bool = False,
            world: str | None = None, backbone: str | Path | None = None, equal_compute: bool = True,
            temperature: float | None = None, progress: bool = True) -> dict[str, Any]:
    """The comparison table of the module docstring on `world` (default: the backbone's world; the default
    world's shipped backbone when neither is given) as one JSON-able dict. `temperature`: the rewrites' sampling
    temperature in every policy row (0: greedy; None: each policy's saved one, 1.0 for the worlds' policies)."""
    if refinements > steps - 1:
        raise ValueError(f"--refine {refinements} is more than the {steps - 1} refinements {steps} steps allow")
    for flag, adapter in (("--adapter", grpo_adapter), ("--feed-forward-adapter", feed_forward_adapter),
                          ("--no-feedback-adapter", no_feedback_adapter)):
        check_adapter_folder(flag, adapter)  # before the backbone loads
    t0 = time.perf_counter()
    w, folder = world_and_backbone(world, backbone)
    world_policy_folder(w)  # before the backbone loads
    pipe = load_backbone(folder)
    guidance = w.GUIDANCE if guidance is None else guidance
    task_name = task_reward_name(w)
    task, alignment, proxy = get_reward(task_name), get_reward(w.ALIGNMENT_REWARD), get_reward("proxy")
    queries, seeds = heldout_queries(w, n, seed)
    adapters = {mode: given or world_adapter(w, mode) for mode, given in
                (("feedback", grpo_adapter), ("feed-forward", feed_forward_adapter), ("no-feedback", no_feedback_adapter))}
    grpo = load_world_policy(adapters["feedback"], pipe, w, temperature)
    feed_forward = load_world_policy(adapters["feed-forward"], pipe, w, temperature)
    no_feedback = (grpo if adapters["no-feedback"] is None
                   else load_world_policy(adapters["no-feedback"], pipe, w, temperature))
    rows: dict[str, tuple[Any, str, bool, int]] = {
        "base": (None, "none", False, steps),
        "feed_forward": (feed_forward, "feed-forward", False, steps),
        "promptloop_no_feedback": (no_feedback, "no-feedback", False, steps),
        "promptloop": (grpo, "feedback", rewrite_first, steps),
    }
    if include_sft:
        rows["promptloop_sft"] = (load_world_policy(None, pipe, w, temperature), "feedback", rewrite_first, steps)
    rows["feed_forward_then_promptloop"] = (StagedPolicy(feed_forward, grpo), "feedback", True, steps)
    result: dict[str, Any] = {"world": w.NAME, "backbone": str(folder), "reward": task_name, "n": n, "seed": seed,
                              "steps": steps, "guidance": guidance, "refinements": refinements,
                              "rewrite_first": rewrite_first, "temperature": grpo.temperature,
                              "adapters": {m: None if a is None else str(a) for m, a in adapters.items()}}
    scores: dict[str, np.ndarray] = {}
    fallback: dict[str, float] = {}
    seconds: dict[str, float] = {}

    def run(name: str, policy: Any, mode: str, first: bool, n_steps: int) -> None:
        torch.manual_seed(seed)  # the policy samples from the global generator
        t = time.perf_counter()
        out = sample(pipe, queries, seeds, policy=policy, mode=mode, steps=n_steps, guidance=guidance,
                     num_refinements=refinements if mode in ("feedback", "no-feedback") else None,
                     rewrite_first=first, progress=progress, desc=f"compare {name}")
        seconds[name] = round(time.perf_counter() - t, 2)
        scores[name] = task(out.images, queries).scores.double().cpu().numpy()
        result[name] = float(scores[name].mean())
        result[f"{name}_ci"] = _ci(scores[name], seed)
        if task_name != w.ALIGNMENT_REWARD:
            result[f"alignment_{name}"] = float(alignment(out.images, queries).scores.mean())
        result[f"proxy_{name}"] = float(proxy(out.images, queries).scores.mean())
        flags = [r.fallback for t_ in out.trajectories for r in t_.refinements]
        if flags:
            fallback[name] = sum(flags) / len(flags)

    for name, (policy, mode, first, n_steps) in rows.items():
        run(name, policy, mode, first, n_steps)
    if equal_compute:
        ec_steps = min(MAX_EQUAL_COMPUTE_STEPS, max(steps, round(steps * seconds["promptloop"] / seconds["feed_forward"])))
        result["equal_compute_steps"] = ec_steps
        run("feed_forward_equal_compute", feed_forward, "feed-forward", False, ec_steps)
    result["fallback_rate"] = fallback
    result["seconds_per_row"] = seconds
    for a, b in (("promptloop", "base"), ("promptloop", "feed_forward"), ("promptloop_no_feedback", "feed_forward"),
                 ("promptloop", "promptloop_no_feedback"), ("promptloop", "feed_forward_equal_compute")):
        if a in scores and b in scores:
            result[f"{a}_minus_{b}"] = float((scores[a] - scores[b]).mean())
            result[f"{a}_minus_{b}_ci"] = _ci(scores[a] - scores[b], seed)
    result["seconds"] = time.perf_counter() - t0
    return result
