"""Seeded, batched sampling of the world backbone through the PromptLoop sampler.

Every sample has its own generator seeded by (seed, sample index), so an image depends only on its
prompt, its seed and the policy — never on how samples were batched.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from promptloop.loop.guidance_interval import guidance_interval
from promptloop.loop.sampler import PromptLoopSampler, Trajectory
from promptloop.policy.base import RefinementPolicy


@dataclass
class SampleBatch:
    images: np.ndarray  # (N, H, W, 3) float in [0, 1]
    trajectories: list[Trajectory] = field(default_factory=list)
    seconds: float = 0.0


def fraction_to_step(fraction: float, num_steps: int) -> int:
    """Loop index after which a fraction `fraction` of the sampling steps is done."""
    return min(max(round(fraction * num_steps) - 1, 0), num_steps - 2)


def check_eta(eta: float, *, scheduler: Any = None, timestep_shift: float | None = None) -> None:
    """`eta` must be in [0, 1], and above 0 only where the step takes it (DDIM, not the Euler of a timestep
    shift): checked on `scheduler` when given, and before a backbone loads on the `timestep_shift` asked for."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if not eta:
        return
    if scheduler is not None and "eta" not in inspect.signature(scheduler.step).parameters:
        raise ValueError(f"eta {eta} needs a DDIM schedule; {type(scheduler).__name__} ignores it")
    if timestep_shift not in (None, 1.0):
        raise ValueError(f"eta {eta} needs a DDIM schedule; a timestep shift of {timestep_shift} samples with Euler, "
                         "which ignores it")


def sample(
    pipe: Any,
    queries: Sequence[str],
    seeds: Sequence[int],
    *,
    policy: RefinementPolicy | None = None,
    mode: str = "none",
    refinement_steps: Sequence[int] | None = None,
    num_refinements: int | None = None,
    steps: int = 20,
    guidance: float = 4.0,
    guidance_from: float = 0.0,
    batch_size: int = 64,
    rewrite_first: bool = False,
    eta: float = 0.0,
    progress: bool = True,
    desc: str = "sampling",
) -> SampleBatch:
    """Sample one image per (query, seed) pair with the given policy/mode (mode 'none': the plain pipeline).

    `rewrite_first` (feedback mode): the policy also rewrites the query before sampling. `eta` > 0 samples
    stochastically (DDIM's eta: 1 is DDPM's ancestral noise), each sample's noise drawn from its own generator.
    `guidance_from` > 0 guides only from that fraction of sampling on (`loop.guidance_interval`)."""
    import time

    if len(queries) != len(seeds):
        raise ValueError(f"{len(queries)} queries for {len(seeds)} seeds")
    check_eta(eta, scheduler=pipe.scheduler)
    sampler = PromptLoopSampler(pipe, policy, rewrite_first=rewrite_first)
    # the unconditional ("") token states are the same for every sample: encode them once, not per batch row
    with torch.no_grad():
        uncond = pipe.encode_prompt([""], pipe.device, 1, False)[0] if guidance > 1.0 else None
    images, trajs = [], []
    t0 = time.perf_counter()
    starts = range(0, len(queries), batch_size)
    with guidance_interval(pipe, guidance_from):  # its hook installed once for every batch
        for i in tqdm(starts, desc=desc, disable=not progress, leave=False):
            q = list(queries[i : i + batch_size])
            gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[i : i + batch_size]]
            kwargs: dict[str, Any] = {}
            if uncond is not None:
                kwargs["negative_prompt_embeds"] = uncond.expand(len(q), -1, -1)
            if eta:
                kwargs["eta"] = eta
            if mode != "none":
                if refinement_steps is not None:
                    kwargs["refinement_steps"] = list(refinement_steps)
                else:
                    kwargs["num_refinements"] = num_refinements
            out = sampler(q, mode=mode, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                          output_type="np", **kwargs)
            images.append(np.asarray(out.images, dtype=np.float32))
            trajs.extend(out.trajectories)
    return SampleBatch(np.concatenate(images), trajs, time.perf_counter() - t0)
