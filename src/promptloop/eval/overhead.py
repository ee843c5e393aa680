"""Inference overhead of the loop (`promptloop bench overhead`), measured in one process.

Plain sampling (mode 'none') vs PromptLoop on the world backbone, batch 16, 20 steps, CFG 4:
- `null_policy_ratio_5`: feedback mode, N_R = 5, a null policy (returns the current prompt at no
  cost, never reads its previews) — the mechanism's own cost (x0 recording, callback, swap bookkeeping);
- `null_preview_ratio_5`: the same with a null policy that looks at its previews (previews are decoded
  lazily, only when a policy reads them: this one pays the batched VAE decode at every refinement);
- `policy_ratio_{1,3,5}`: feedback mode with the world's shipped policy (`DEFAULT_POLICY`; with `adapter`, that LoRA
  adapter on it, e.g. the GRPO-trained one PromptLoop runs) at N_R = 1, 3, 5 (prompts re-encoded and conditioning
  swapped whenever the policy changes them).
Each configuration runs `repeats` times, interleaved with the others (after one warm-up round), and
the median wall time is reported; ratios are medians over the plain sampler's median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from promptloop.eval.compare import check_adapter_folder, load_world_policy, world_and_backbone, world_policy_folder
from promptloop.loop.sampler import PromptLoopSampler
from promptloop.policy.base import NullPolicy, PolicyInput, PolicyOutput
from promptloop.world.backbone import load_backbone


class _PreviewReadingNullPolicy(NullPolicy):
    """A null policy that decodes (reads) its previews, as a VLM policy would."""

    def propose(self, inputs: PolicyInput) -> PolicyOutput:
        if inputs.previews is not None:
            list(inputs.previews)
        return super().propose(inputs)


def overhead(batch: int = 16, steps: int = 20, repeats: int = 5, guidance: float | None = None,
             backbone: str | Path | None = None, world: str | None = None,
             adapter: str | Path | None = None) -> dict[str, Any]:
    """Time plain sampling against PromptLoop (module docstring). `world` (a name or alias): that world's backbone
    (`DEFAULT_BACKBONE`) and shipped policy (`DEFAULT_POLICY`); `backbone`: a backbone folder (its world's policy);
    neither: the default backbone. Both: the backbone must be the world's. `adapter`: a LoRA adapter folder on the
    world's policy (FileNotFoundError when missing)."""
    check_adapter_folder("--adapter", adapter)  # before the backbone loads
    w, folder = world_and_backbone(world, backbone)
    policy_folder = world_policy_folder(w)  # before the backbone loads
    pipe = load_backbone(folder)
    policy = load_world_policy(adapter, pipe, w)  # the shipped SFT policy, with `adapter` on it when given
    guidance = w.GUIDANCE if guidance is None else guidance
    queries = [it.caption for it in w.sample_prompts("heldout", batch, seed=0)]
    sampler = PromptLoopSampler(pipe)

    def run(mode: str, pol: Any, n_r: int) -> Callable[[], None]:
        def go() -> None:
            gens = [torch.Generator().manual_seed(k) for k in range(batch)]
            kwargs: dict[str, Any] = {"num_refinements": n_r} if mode != "none" else {}
            sampler(queries, policy=pol, mode=mode, num_inference_steps=steps, guidance_scale=guidance,
                    generator=gens, output_type="np", **kwargs)
        return go

    configs: dict[str, Callable[[], None]] = {
        "plain": run("none", None, 0),
        "null_5": run("feedback", NullPolicy(), 5),
        "null_preview_5": run("feedback", _PreviewReadingNullPolicy(), 5),
        "policy_1": run("feedback", policy, 1),
        "policy_3": run("feedback", policy, 3),
        "policy_5": run("feedback", policy, 5),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    for go in configs.values():  # warm-up
        go()
    for _ in range(repeats):
        for name, go in configs.items():
            t0 = time.perf_counter()
            go()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "world": w.NAME,
        "policy": str(policy_folder),
        "adapter": None if adapter is None else str(adapter),
        "batch": batch,
        "steps": steps,
        "repeats": repeats,
        "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "plain_seconds": med["plain"],
        "null_policy_ratio_5": med["null_5"] / med["plain"],
        "null_preview_ratio_5": med["null_preview_5"] / med["plain"],
        "policy_ratio_1": med["policy_1"] / med["plain"],
        "policy_ratio_3": med["policy_3"] / med["plain"],
        "policy_ratio_5": med["policy_5"] / med["plain"],
        "seconds": {k: v for k, v in med.items()},
    }
