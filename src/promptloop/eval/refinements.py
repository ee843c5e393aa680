"""The refinements curve (`promptloop eval refinements --world v3`): the world's task reward at N_R = 0..max, with
and without feedback, on the same heldout queries and seeds.

- `feedback`: the world's feedback adapter, N_R refinements equally spaced, each reading its x0 preview;
- `no_feedback`: the world's no-feedback adapter (where it declares one, else the feedback adapter without previews),
  all N_R prompts chosen before sampling.
N_R = 0 is the plain backbone in both rows. The paper's claim: with feedback the reward keeps rising with N_R, without
it saturates. Each point has a 95 % bootstrap CI over queries; the figure is written where asked.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptloop.eval.compare import (
    heldout_queries,
    load_world_policy,
    world_adapter,
    world_and_backbone,
    world_policy_folder,
)
from promptloop.eval.figures import curve_with_bands
from promptloop.rewards import get_reward
from promptloop.world import task_reward_name
from promptloop.world.backbone import load_backbone
from promptloop.world.fair import bootstrap_ci
from promptloop.world.sampling import sample


def refinements_curve(world: str = "v3", n: int = 128, seed: int = 0, max_refinements: int = 5,
                      backbone: str | Path | None = None, figure: str | Path | None = None,
                      temperature: float | None = None, progress: bool = True) -> dict[str, Any]:
    """The table of the module docstring as one JSON-able dict (and its figure at `figure`, when given);
    `temperature`: the rewrites' sampling temperature (0: greedy; None: the policies' saved one)."""
    t0 = time.perf_counter()
    w, folder = world_and_backbone(world, backbone)
    world_policy_folder(w)  # before the backbone loads
    pipe = load_backbone(folder)
    task_name = task_reward_name(w)
    task = get_reward(task_name)
    queries, seeds = heldout_queries(w, n, seed)
    fb = load_world_policy(world_adapter(w, "feedback"), pipe, w, temperature)
    nf_adapter = world_adapter(w, "no-feedback")
    nf = fb if nf_adapter is None else load_world_policy(nf_adapter, pipe, w, temperature)

    def score(policy: Any, mode: str, n_r: int) -> np.ndarray:
        torch.manual_seed(seed)
        out = sample(pipe, queries, seeds, policy=policy, mode=mode if n_r else "none", steps=w.STEPS,
                     guidance=w.GUIDANCE, num_refinements=n_r or None, progress=progress, desc=f"{mode} N_R={n_r}")
        return task(out.images, queries).scores.double().numpy()

    base = score(None, "none", 0)
    result: dict[str, Any] = {"world": w.NAME, "reward": task_name, "n": n, "seed": seed, "temperature": fb.temperature,
                              "no_feedback_adapter": None if nf is fb else str(nf_adapter)}
    for name, policy, mode in (("feedback", fb, "feedback"), ("no_feedback", nf, "no-feedback")):
        rows = []
        for n_r in range(max_refinements + 1):
            s = base if n_r == 0 else score(policy, mode, n_r)
            lo, hi = bootstrap_ci(s, seed=seed)
            rows.append({"refinements": n_r, "mean": float(s.mean()), "ci": [float(lo), float(hi)]})
        result[name] = rows
    if figure is not None:
        curve_with_bands({label: ([r["refinements"] for r in result[key]], [r["mean"] for r in result[key]],
                                  [r["ci"][0] for r in result[key]], [r["ci"][1] for r in result[key]])
                          for key, label in (("feedback", "with feedback"), ("no_feedback", "without (prompts in advance)"))},
                         figure, xlabel="refinements N_R", ylabel=task_name,
                         title=f"world {w.VERSION}: {task_name} vs refinements ({n} heldout queries, 95 % CI)")
        result["figure"] = str(figure)
    result["seconds"] = time.perf_counter() - t0
    return result
